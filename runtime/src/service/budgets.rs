//! Budgets and rate limits of an organisation.

use super::*;

impl Service {
    /// Adds a budget. `claw` names the claw of a `claw` budget (required)
    /// or of a `conversation` budget (optional: every claw's conversations
    /// otherwise).
    ///
    /// # Errors
    ///
    /// When the claw does not exist, or a claw budget names none.
    pub fn budgets_add(
        &self,
        scope: BudgetScope,
        claw: Option<&str>,
        unit: BudgetUnit,
        period: BudgetPeriod,
        amount: i64,
    ) -> Result<Budget, ServiceError> {
        if scope == BudgetScope::Claw && claw.is_none() {
            return Err(ServiceError::Invalid(
                "a claw budget needs --claw NAME".into(),
            ));
        }
        if scope == BudgetScope::Org && claw.is_some() {
            return Err(ServiceError::Invalid(
                "an organisation budget takes no --claw".into(),
            ));
        }
        if amount < 0 {
            return Err(ServiceError::Invalid("a budget cannot be negative".into()));
        }
        let claw_id = claw.map(|name| self.claw(name).map(|c| c.id)).transpose()?;
        let mut budget = Budget {
            id: 0,
            scope,
            claw_id,
            unit,
            period,
            amount,
        };
        budget.id = self.db.budget_add(&self.org.id, &budget, now_ms())?;
        Ok(budget)
    }

    /// The organisation's budgets.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub fn budgets_list(&self) -> Result<Vec<Budget>, ServiceError> {
        Ok(self.db.budgets(&self.org.id)?)
    }

    /// Removes a budget.
    ///
    /// # Errors
    ///
    /// When the organisation has no budget of that id.
    pub fn budgets_remove(&self, id: i64) -> Result<(), ServiceError> {
        if self.db.budget_remove(&self.org.id, id)? {
            Ok(())
        } else {
            Err(ServiceError::NotFound(format!(
                "no budget #{id}: see `clawrun budgets list` (GET /v1/budgets)"
            )))
        }
    }

    /// Sets the per-minute limits of a claw or of a key (by name).
    ///
    /// # Errors
    ///
    /// When the claw or key does not exist, or no limit is given.
    pub fn limits_set(
        &self,
        claw: Option<&str>,
        key: Option<&str>,
        rpm: Option<i64>,
        tpm: Option<i64>,
    ) -> Result<RateLimit, ServiceError> {
        let (scope, target_id) = match (claw, key) {
            (Some(c), None) => ("claw", self.claw(c)?.id),
            (None, Some(k)) => ("key", self.key(k)?.id),
            _ => {
                return Err(ServiceError::Invalid(
                    "give exactly one of --claw NAME or --key NAME".into(),
                ));
            }
        };
        if rpm.is_none() && tpm.is_none()
            || rpm.is_some_and(|v| v <= 0)
            || tpm.is_some_and(|v| v <= 0)
        {
            return Err(ServiceError::Invalid(
                "give --rpm and/or --tpm, each a positive number".into(),
            ));
        }
        let limit = RateLimit {
            scope: scope.into(),
            target_id,
            rpm,
            tpm,
        };
        self.db.rate_limit_set(&self.org.id, &limit)?;
        Ok(limit)
    }

    /// Removes the limits of a claw or of a key (by name).
    ///
    /// # Errors
    ///
    /// When the claw or key does not exist or has no limits.
    pub fn limits_remove(&self, claw: Option<&str>, key: Option<&str>) -> Result<(), ServiceError> {
        let target_id = match (claw, key) {
            (Some(c), None) => self.claw(c)?.id,
            (None, Some(k)) => self.key(k)?.id,
            _ => {
                return Err(ServiceError::Invalid(
                    "give exactly one of --claw NAME or --key NAME".into(),
                ));
            }
        };
        if self.db.rate_limit_remove(&self.org.id, &target_id)? {
            Ok(())
        } else {
            Err(ServiceError::NotFound(
                "no rate limits are set there: see `clawrun limits list` (GET /v1/rate-limits)"
                    .into(),
            ))
        }
    }

    /// The organisation's rate limits.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub fn limits_list(&self) -> Result<Vec<RateLimit>, ServiceError> {
        Ok(self.db.rate_limits(&self.org.id)?)
    }
}

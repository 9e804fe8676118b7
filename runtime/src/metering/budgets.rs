//! Budgets and rate limits: what a call may consume, checked before it is
//! sent.
//!
//! Admission reserves the call's worst case (its input estimate plus its
//! `max_tokens`, and their price) in the same database transaction that
//! checks every applicable budget and limit against the usage already
//! recorded plus the reservations of calls still in flight. SQLite runs such
//! transactions one at a time, across processes, so N concurrent calls
//! against a budget that admits k admit at most k. The reservation is
//! released in the transaction that writes the call's usage record, which
//! charges what the provider reported (or the estimate of a cut call).

use std::fmt;

/// What a budget caps.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum BudgetScope {
    /// Everything the organisation's claws consume.
    Org,
    /// One claw.
    Claw,
    /// Each conversation separately (of one claw, or of any).
    Conversation,
}

/// The unit of a budget.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum BudgetUnit {
    /// Input plus output tokens.
    Tokens,
    /// Estimated cost in millionths of a dollar.
    Micros,
}

/// The window a budget counts over (UTC).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    /// Since midnight.
    Day,
    /// Since the first of the month.
    Month,
    /// Ever.
    Lifetime,
}

macro_rules! names {
    ($ty:ty { $($variant:ident => $name:literal),* }) => {
        impl $ty {
            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name),* }
            }
        }

        impl std::str::FromStr for $ty {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok(Self::$variant),)*
                    other => Err(format!("`{other}` is not one of: {}", [$($name),*].join(", "))),
                }
            }
        }
    };
}

names!(BudgetScope { Org => "org", Claw => "claw", Conversation => "conversation" });
names!(BudgetUnit { Tokens => "tokens", Micros => "micros" });
names!(BudgetPeriod { Day => "day", Month => "month", Lifetime => "lifetime" });

/// A budget as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Budget {
    /// Identifier, for removal.
    pub id: i64,
    /// What it caps.
    pub scope: BudgetScope,
    /// The claw, for `claw` budgets and claw-specific `conversation` ones.
    pub claw_id: Option<String>,
    /// Tokens or micro-dollars.
    pub unit: BudgetUnit,
    /// Counting window.
    pub period: BudgetPeriod,
    /// The cap.
    pub amount: i64,
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = match self.period {
            BudgetPeriod::Day => "daily",
            BudgetPeriod::Month => "monthly",
            BudgetPeriod::Lifetime => "lifetime",
        };
        let of = match self.scope {
            BudgetScope::Org => "organisation",
            BudgetScope::Claw => "claw",
            BudgetScope::Conversation => "per-conversation",
        };
        match self.unit {
            BudgetUnit::Tokens => write!(
                f,
                "{of} {per} budget of {} tokens (#{})",
                self.amount, self.id
            ),
            BudgetUnit::Micros => {
                write!(
                    f,
                    "{of} {per} budget of ${:.6} (#{})",
                    self.amount as f64 / 1e6,
                    self.id
                )
            }
        }
    }
}

/// A per-minute rate limit as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RateLimit {
    /// `claw` or `key`.
    pub scope: String,
    /// The claw or key id.
    pub target_id: String,
    /// Requests per minute.
    pub rpm: Option<i64>,
    /// Tokens per minute.
    pub tpm: Option<i64>,
}

/// A call asking to be admitted.
#[derive(Debug, Clone)]
pub struct Admission {
    /// Organisation.
    pub org_id: String,
    /// Claw.
    pub claw_id: String,
    /// Provider key.
    pub key_id: String,
    /// Conversation.
    pub conversation_id: String,
    /// Worst-case tokens: input estimate plus `max_tokens`.
    pub tokens: i64,
    /// Worst-case cost, or `None` when the model has no price.
    pub micros: Option<i64>,
    /// Now, in ms since the Unix epoch.
    pub now_ms: i64,
}

/// Why a call was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A budget would be exceeded; the text names it.
    Budget(String),
    /// A rate limit is reached; retry after this many milliseconds.
    RateLimited(i64),
}

/// Start of the window of `period` containing `now_ms` (UTC).
pub fn period_start(period: BudgetPeriod, now_ms: i64) -> i64 {
    const DAY: i64 = 86_400_000;
    match period {
        BudgetPeriod::Lifetime => 0,
        BudgetPeriod::Day => now_ms - now_ms.rem_euclid(DAY),
        BudgetPeriod::Month => {
            // Civil date from days since the epoch (Howard Hinnant's
            // algorithm), then back to the first of that month.
            let days = now_ms.div_euclid(DAY);
            let z = days + 719_468;
            let era = z.div_euclid(146_097);
            let doe = z - era * 146_097;
            let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
            let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
            let mp = (5 * doy + 2) / 153;
            let day_of_month = doy - (153 * mp + 2) / 5; // 0-based
            (days - day_of_month) * DAY
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_start_at_utc_midnight_and_the_first_of_the_month() {
        // 2026-12-03T16:31:19Z
        let now = 1_796_315_479_000;
        assert_eq!(period_start(BudgetPeriod::Day, now), 1_796_256_000_000); // 2026-12-03T00:00Z
        assert_eq!(period_start(BudgetPeriod::Month, now), 1_796_083_200_000); // 2026-12-01T00:00Z
        assert_eq!(period_start(BudgetPeriod::Lifetime, now), 0);
        // 2024-03-01T00:00:00Z is its own month start; 2024-02-29 belongs to February.
        assert_eq!(
            period_start(BudgetPeriod::Month, 1_709_251_200_000),
            1_709_251_200_000
        );
        assert_eq!(
            period_start(BudgetPeriod::Month, 1_709_164_800_000),
            1_706_745_600_000
        );
    }
}

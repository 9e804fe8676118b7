//! An opened data directory, shared by every organisation.

use super::*;

/// An opened data directory: the database, the LLM service holding the
/// master key, and the cage. Shared by every organisation's [`Service`].
pub struct Host {
    pub(super) db: Arc<dyn Db>,
    pub(super) llm: Arc<LlmService>,
    pub(super) cage: OnceLock<Cage>,
    pub(super) limits: CageLimits,
    pub(super) data_dir: PathBuf,
}

impl Host {
    /// Opens `data_dir`, checking that the master key opens it before
    /// anything else happens.
    ///
    /// # Errors
    ///
    /// When the directory is not initialised or the master key is missing
    /// or wrong.
    pub fn open(data_dir: &Path) -> Result<Arc<Self>, ServiceError> {
        if !data_dir.join(crate::db::DB_FILE).exists() {
            return Err(ServiceError::NotInitialised(data_dir.to_owned()));
        }
        let db: Arc<dyn Db> = Arc::new(SqliteDb::open(data_dir)?);
        let master = master::load_or_recover(data_dir, &*db, DEFAULT_ORG)?;
        let options = providers::ProviderOptions::from_env()
            .map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let http = options
            .client()
            .map_err(|e| ServiceError::Engine(e.to_string()))?;
        let locks = Some(KeyLocks::new(data_dir));
        let prices = crate::metering::PriceTable::load(data_dir)
            .map_err(|e| ServiceError::Invalid(e.to_string()))?;
        let llm = Arc::new(
            LlmService::new(db.clone(), master, http, locks, prices).with_provider_options(options),
        );
        Ok(Arc::new(Self {
            db,
            llm,
            cage: OnceLock::new(),
            limits: CageLimits::default(),
            data_dir: data_dir.to_owned(),
        }))
    }

    pub(super) fn cage(&self) -> Result<&Cage, ServiceError> {
        if let Some(cage) = self.cage.get() {
            return Ok(cage);
        }
        let cage = Cage::new().map_err(|e| ServiceError::Engine(format!("{e:#}")))?;
        Ok(self.cage.get_or_init(|| cage))
    }

    /// The organisation named `name`, acting as the local user.
    ///
    /// # Errors
    ///
    /// [`ServiceError::UnknownOrg`] when there is none.
    pub fn org(self: &Arc<Self>, name: &str) -> Result<Service, ServiceError> {
        let org = self
            .db
            .org_by_name(name)?
            .ok_or_else(|| ServiceError::UnknownOrg(name.into()))?;
        Ok(self.service(org, actor()))
    }

    fn service(self: &Arc<Self>, org: OrgRow, actor: String) -> Service {
        Service {
            host: self.clone(),
            db: self.db.clone(),
            llm: self.llm.clone(),
            limits: self.limits.clone(),
            slots: slots::RunSlots::new(&self.data_dir, &org.id),
            org,
            actor,
        }
    }

    /// Creates an organisation with its own data key, and its first API
    /// token (named `admin`), whose text is returned once.
    ///
    /// # Errors
    ///
    /// When the name is invalid or taken.
    pub fn orgs_create(self: &Arc<Self>, name: &str) -> Result<(OrgRow, NewToken), ServiceError> {
        check_name("organisation", name)?;
        let id = new_id("org");
        let wrapped = self.llm.wrap_new_data_key(&id);
        let org = OrgRow {
            id,
            name: name.into(),
            wrapped_data_key: wrapped,
            created_at_ms: now_ms(),
        };
        self.db.org_create(&org)?;
        let token = self.service(org.clone(), actor()).tokens_create("admin")?;
        tracing::info!(org = %org.name, "organisation created");
        Ok((org, token))
    }

    /// Every organisation.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub fn orgs_list(&self) -> Result<Vec<OrgRow>, ServiceError> {
        Ok(self.db.orgs()?)
    }

    /// The organisation a bearer token belongs to, acting as that token;
    /// `None` for a malformed, unknown or revoked token. The secret part is
    /// compared in constant time.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub fn authenticate(self: &Arc<Self>, bearer: &str) -> Result<Option<Service>, ServiceError> {
        let Some((id, secret)) = tokens::parse(bearer) else {
            return Ok(None);
        };
        let Some(row) = self.db.token_by_id(id)? else {
            return Ok(None);
        };
        if row.revoked_at_ms.is_some() || !tokens::matches(secret, &row.secret_hash) {
            return Ok(None);
        }
        let Some(org) = self.db.org_by_id(&row.org_id)? else {
            return Ok(None);
        };
        Ok(Some(self.service(org, format!("token:{}", row.id))))
    }

    /// Resolves once every usage record this process committed is on
    /// disk; a server calls it as it stops.
    ///
    /// # Errors
    ///
    /// When the disk refuses to sync.
    pub async fn sync_ledger(&self) -> Result<(), ServiceError> {
        Ok(self.db.sync_ledger().await?)
    }

    /// One sample per usage record, of every organisation, for the
    /// host's metrics.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub fn metric_samples(&self) -> Result<Vec<crate::db::MetricSample>, ServiceError> {
        Ok(self.db.metric_samples()?)
    }
}

//! Where the management commands act: a local data directory, or a remote
//! host's API (`--server URL` with a token from `CLAWRUN_TOKEN`). Both give
//! back the API's views, so the CLI prints the same either way.

use anyhow::{Context, bail};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::error::ErrorBody;
use crate::api::views::{
    ClawView, KeyView, LimitView, LimitsRequest, NewTokenView, RunView, TokenView, UsageGroupName,
    limit_views,
};
use crate::db::{AuditRecord, UsageGroup, UsageTotals};
use crate::metering::budgets::{Budget, BudgetPeriod, BudgetScope, BudgetUnit, RateLimit};
use crate::providers::{CompatibleConfig, ProviderKind};
use crate::service::{Service, UsageScope};
use crate::vault::ProviderSecret;

/// A management API client.
pub struct Remote {
    base: url::Url,
    token: SecretString,
    http: reqwest::Client,
}

impl Remote {
    /// A client of the host at `server`, with the token from `CLAWRUN_TOKEN`.
    pub fn new(server: &str) -> anyhow::Result<Self> {
        let mut base =
            url::Url::parse(server).context("--server is not a URL like https://host:8080")?;
        if !base.username().is_empty() || base.password().is_some() {
            bail!(
                "--server must not hold a user name or password: the token goes in CLAWRUN_TOKEN"
            );
        }
        let loopback = match base.host() {
            Some(url::Host::Domain(h)) => h == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        if base.scheme() != "https" && !loopback {
            bail!(
                "--server must use https (plain http only to a loopback address): the token would cross the network in clear"
            );
        }
        // A host behind a path prefix (https://example.com/clawrun/): the
        // API's paths are joined below it.
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let token = std::env::var("CLAWRUN_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .context("--server needs an API token in CLAWRUN_TOKEN (from `clawrun orgs create` or `clawrun tokens create`)")?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()?;
        Ok(Self {
            base,
            token: SecretString::from(token.trim().to_owned()),
            http,
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
    ) -> anyhow::Result<Option<T>> {
        let url = self.base.join(path).context("bad API path")?;
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(self.token.expose_secret());
        if let Some((bytes, content_type)) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(bytes);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = response.status();
        if status == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let bytes = response.bytes().await?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| b.error.message)
                .unwrap_or_else(|_| format!("the server answered {status}"));
            if status == reqwest::StatusCode::UNAUTHORIZED {
                bail!("the server refused the token in CLAWRUN_TOKEN: {message}");
            }
            bail!("{message}");
        }
        Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
            format!("the server's answer to {path} is not what this clawrun expects: are both the same version?")
        })?))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(Method::GET, path, None)
            .await?
            .context("the server answered nothing")
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        let bytes = zeroize::Zeroizing::new(serde_json::to_vec(body)?);
        self.call(method, path, Some((bytes.to_vec(), "application/json")))
            .await?
            .context("the server answered nothing")
    }

    async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.call::<serde_json::Value>(Method::DELETE, path, None)
            .await?;
        Ok(())
    }
}

fn seg(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes()).collect()
}

/// Where the commands act.
pub enum Backend {
    /// A local data directory.
    Local(Service),
    /// A remote host.
    Remote(Remote),
}

#[derive(Serialize)]
struct SecretBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    base_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_header: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_scheme: Option<&'a str>,
    secret: &'a str,
}

impl Backend {
    pub async fn keys_list(&self) -> anyhow::Result<Vec<KeyView>> {
        match self {
            Self::Local(s) => Ok(s.keys_list()?.iter().map(KeyView::from).collect()),
            Self::Remote(r) => r.get("v1/keys").await,
        }
    }

    pub async fn keys_add(
        &self,
        name: &str,
        kind: ProviderKind,
        base_url: Option<&str>,
        compatible: CompatibleConfig,
        secret: ProviderSecret,
    ) -> anyhow::Result<KeyView> {
        match self {
            Self::Local(s) => Ok(KeyView::from(
                &s.keys_add_configured(name, kind, base_url, compatible, secret)?,
            )),
            Self::Remote(r) => {
                let body = SecretBody {
                    name: Some(name),
                    provider: Some(kind.as_str()),
                    base_url,
                    path: compatible.path.as_deref(),
                    auth_header: compatible.auth_header.as_deref(),
                    auth_scheme: compatible.auth_scheme.as_deref(),
                    secret: secret.expose(),
                };
                r.send(Method::POST, "v1/keys", &body).await
            }
        }
    }

    pub async fn keys_rotate(&self, name: &str, secret: ProviderSecret) -> anyhow::Result<KeyView> {
        match self {
            Self::Local(s) => Ok(KeyView::from(&s.keys_rotate(name, secret)?)),
            Self::Remote(r) => {
                let body = SecretBody {
                    name: None,
                    provider: None,
                    base_url: None,
                    path: None,
                    auth_header: None,
                    auth_scheme: None,
                    secret: secret.expose(),
                };
                r.send(
                    Method::POST,
                    &format!("v1/keys/{}/rotate", seg(name)),
                    &body,
                )
                .await
            }
        }
    }

    pub async fn keys_revoke(&self, name: &str) -> anyhow::Result<KeyView> {
        match self {
            Self::Local(s) => Ok(KeyView::from(&s.keys_revoke(name)?)),
            Self::Remote(r) => {
                r.send(Method::POST, &format!("v1/keys/{}/revoke", seg(name)), &())
                    .await
            }
        }
    }

    pub async fn claws_list(&self) -> anyhow::Result<Vec<ClawView>> {
        match self {
            Self::Local(s) => Ok(s.claws_list_with_limits()?),
            Self::Remote(r) => r.get("v1/claws").await,
        }
    }

    pub async fn claw_limits(&self, name: &str) -> anyhow::Result<Vec<LimitView>> {
        match self {
            Self::Local(s) => {
                let (own, limits) = s.claw_limits(name)?;
                Ok(limit_views(&own, &limits))
            }
            Self::Remote(r) => r.get(&format!("v1/claws/{}/limits", seg(name))).await,
        }
    }

    pub async fn claws_set_limits(
        &self,
        name: &str,
        request: &LimitsRequest,
    ) -> anyhow::Result<Vec<LimitView>> {
        match self {
            Self::Local(s) => {
                let (own, limits) =
                    s.claws_set_limits(name, &request.overrides(), request.reset)?;
                Ok(limit_views(&own, &limits))
            }
            Self::Remote(r) => {
                r.send(
                    Method::PUT,
                    &format!("v1/claws/{}/limits", seg(name)),
                    request,
                )
                .await
            }
        }
    }

    pub async fn claws_deploy(&self, name: &str, bytes: Vec<u8>) -> anyhow::Result<ClawView> {
        match self {
            Self::Local(s) => Ok(ClawView::from(&s.claws_deploy(name, &bytes)?)),
            Self::Remote(r) => r
                .call(
                    Method::PUT,
                    &format!("v1/claws/{}", seg(name)),
                    Some((bytes, "application/wasm")),
                )
                .await?
                .context("the server answered nothing"),
        }
    }

    pub async fn claws_delete(&self, name: &str) -> anyhow::Result<()> {
        match self {
            Self::Local(s) => Ok(s.claws_delete(name)?),
            Self::Remote(r) => r.delete(&format!("v1/claws/{}", seg(name))).await,
        }
    }

    pub async fn claws_assign(
        &self,
        name: &str,
        key: &str,
        model: &str,
    ) -> anyhow::Result<ClawView> {
        match self {
            Self::Local(s) => Ok(ClawView::from(&s.claws_assign(name, key, model)?)),
            Self::Remote(r) => {
                let body = crate::api::views::Assign {
                    key: key.into(),
                    model: model.into(),
                };
                r.send(
                    Method::PUT,
                    &format!("v1/claws/{}/assignment", seg(name)),
                    &body,
                )
                .await
            }
        }
    }

    pub async fn run(
        &self,
        name: &str,
        conversation: &str,
        input: &str,
    ) -> anyhow::Result<RunView> {
        match self {
            Self::Local(s) => {
                let report = s.run(name, conversation, input).await?;
                if !report.output.stderr.is_empty() {
                    tracing::debug!(claw = %name, stderr = %report.output.stderr, "guest stderr");
                }
                let (output, error) = match report.output.result {
                    Ok(text) => (Some(text), None),
                    Err(text) => (None, Some(text)),
                };
                Ok(RunView {
                    run_id: report.run_id,
                    conversation_id: report.conversation_id,
                    output,
                    error,
                    fuel_used: report.output.fuel_used,
                    usage: report.usage,
                })
            }
            Self::Remote(r) => {
                let body = crate::api::views::RunRequest {
                    input: input.into(),
                    conversation_id: Some(conversation.into()),
                };
                r.send(Method::POST, &format!("v1/claws/{}/runs", seg(name)), &body)
                    .await
            }
        }
    }

    pub async fn usage(
        &self,
        group: UsageGroup,
        scope: &UsageScope<'_>,
    ) -> anyhow::Result<Vec<UsageTotals>> {
        match self {
            Self::Local(s) => Ok(s.usage(group, scope)?),
            Self::Remote(r) => {
                let mut query = url::form_urlencoded::Serializer::new(String::new());
                query.append_pair("by", &String::from(UsageGroupName(group)));
                if let Some(c) = scope.claw {
                    query.append_pair("claw", c);
                }
                if let Some(c) = scope.conversation {
                    query.append_pair("conversation", c);
                }
                if let Some(t) = scope.since_ms {
                    query.append_pair("since_ms", &t.to_string());
                }
                if let Some(t) = scope.until_ms {
                    query.append_pair("until_ms", &t.to_string());
                }
                r.get(&format!("v1/usage?{}", query.finish())).await
            }
        }
    }

    pub async fn audit(&self) -> anyhow::Result<Vec<AuditRecord>> {
        match self {
            Self::Local(s) => Ok(s.audit_records()?),
            Self::Remote(r) => r.get("v1/audit").await,
        }
    }

    pub async fn budgets_list(&self) -> anyhow::Result<Vec<Budget>> {
        match self {
            Self::Local(s) => Ok(s.budgets_list()?),
            Self::Remote(r) => r.get("v1/budgets").await,
        }
    }

    pub async fn budgets_add(
        &self,
        scope: BudgetScope,
        claw: Option<&str>,
        unit: BudgetUnit,
        per: BudgetPeriod,
        amount: i64,
    ) -> anyhow::Result<Budget> {
        match self {
            Self::Local(s) => Ok(s.budgets_add(scope, claw, unit, per, amount)?),
            Self::Remote(r) => {
                let (tokens, usd) = match unit {
                    BudgetUnit::Tokens => (Some(amount), None),
                    BudgetUnit::Micros => (None, Some(amount as f64 / 1e6)),
                };
                let body = crate::api::views::BudgetRequest {
                    scope,
                    claw: claw.map(str::to_owned),
                    tokens,
                    usd,
                    per,
                };
                r.send(Method::POST, "v1/budgets", &body).await
            }
        }
    }

    pub async fn budgets_remove(&self, id: i64) -> anyhow::Result<()> {
        match self {
            Self::Local(s) => Ok(s.budgets_remove(id)?),
            Self::Remote(r) => r.delete(&format!("v1/budgets/{id}")).await,
        }
    }

    pub async fn limits_list(&self) -> anyhow::Result<Vec<RateLimit>> {
        match self {
            Self::Local(s) => Ok(s.limits_list()?),
            Self::Remote(r) => r.get("v1/rate-limits").await,
        }
    }

    pub async fn limits_set(
        &self,
        claw: Option<&str>,
        key: Option<&str>,
        rpm: Option<i64>,
        tpm: Option<i64>,
    ) -> anyhow::Result<RateLimit> {
        match self {
            Self::Local(s) => Ok(s.limits_set(claw, key, rpm, tpm)?),
            Self::Remote(r) => {
                let body = crate::api::views::RateLimitRequest {
                    claw: claw.map(str::to_owned),
                    key: key.map(str::to_owned),
                    rpm,
                    tpm,
                };
                r.send(Method::PUT, "v1/rate-limits", &body).await
            }
        }
    }

    pub async fn limits_remove(&self, claw: Option<&str>, key: Option<&str>) -> anyhow::Result<()> {
        match self {
            Self::Local(s) => Ok(s.limits_remove(claw, key)?),
            Self::Remote(r) => {
                let mut query = url::form_urlencoded::Serializer::new(String::new());
                if let Some(c) = claw {
                    query.append_pair("claw", c);
                }
                if let Some(k) = key {
                    query.append_pair("key", k);
                }
                r.delete(&format!("v1/rate-limits?{}", query.finish()))
                    .await
            }
        }
    }

    pub async fn tokens_list(&self) -> anyhow::Result<Vec<TokenView>> {
        match self {
            Self::Local(s) => Ok(s.tokens_list()?.iter().map(TokenView::from).collect()),
            Self::Remote(r) => r.get("v1/tokens").await,
        }
    }

    pub async fn tokens_create(&self, name: &str) -> anyhow::Result<NewTokenView> {
        match self {
            Self::Local(s) => {
                let token = s.tokens_create(name)?;
                Ok(NewTokenView {
                    view: TokenView::from(&token.row),
                    token: token.expose().to_owned(),
                })
            }
            Self::Remote(r) => {
                let body = crate::api::views::CreateToken { name: name.into() };
                r.send(Method::POST, "v1/tokens", &body).await
            }
        }
    }

    pub async fn tokens_revoke(&self, id: &str) -> anyhow::Result<()> {
        match self {
            Self::Local(s) => Ok(s.tokens_revoke(id)?),
            Self::Remote(r) => r.delete(&format!("v1/tokens/{}", seg(id))).await,
        }
    }
}

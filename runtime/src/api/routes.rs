//! The management API under `/v1`. Every route acts in the organisation of
//! the bearer token; an object of another organisation is answered 404, the
//! same as one that does not exist, because every lookup is by organisation.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use secrecy::ExposeSecret;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, Body, ErrorBody, Json, Path, Query, SecretJson};
use super::views::{
    AddKey, Assign, BudgetRequest, ClawView, CreateToken, KeyView, LimitTarget, LimitView,
    LimitsRequest, NewTokenView, OrgView, RateLimitRequest, RecordsQuery, RotateKey, RunRequest,
    RunView, TokenView, UsageQuery, limit_views,
};
use crate::db::{AuditRecord, UsageGroup, UsageRecord, UsageTotals};
use crate::metering::budgets::{Budget, BudgetUnit, RateLimit};
use crate::providers::ProviderKind;
use crate::service::{self, Host, Service, ServiceError, UsageScope};
use crate::vault::ProviderSecret;

/// The organisation of the request's bearer token, acting as that token.
pub struct Org(pub Arc<Service>);

impl FromRequestParts<Arc<Host>> for Org {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, host: &Arc<Host>) -> Result<Self, ApiError> {
        let bearer = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .and_then(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer").then_some(token))
            .map(|t| t.trim().to_owned())
            .ok_or_else(ApiError::unauthorized)?;
        let host = host.clone();
        let found = tokio::task::spawn_blocking(move || host.authenticate(&bearer))
            .await
            .map_err(|e| ApiError::internal(&e))??;
        found
            .map(|svc| Org(Arc::new(svc)))
            .ok_or_else(ApiError::unauthorized)
    }
}

/// Runs a service operation off the async workers (SQLite writes fsync).
async fn blocking<T: Send + 'static>(
    svc: Arc<Service>,
    op: impl FnOnce(&Service) -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || op(&svc))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(ApiError::from)
}

/// The routes, with their OpenAPI description.
pub fn routes() -> OpenApiRouter<Arc<Host>> {
    OpenApiRouter::new()
        .routes(routes!(whoami))
        .routes(routes!(keys_list, keys_add))
        .routes(routes!(keys_rotate))
        .routes(routes!(keys_revoke))
        .routes(routes!(claws_list))
        .routes(routes!(claws_deploy, claws_delete))
        .routes(routes!(claws_assign))
        .routes(routes!(claws_limits, claws_set_limits))
        .routes(routes!(runs_create))
        .routes(routes!(usage_totals))
        .routes(routes!(usage_records))
        .routes(routes!(audit_list))
        .routes(routes!(budgets_list, budgets_add))
        .routes(routes!(budgets_remove))
        .routes(routes!(
            rate_limits_list,
            rate_limits_set,
            rate_limits_remove
        ))
        .routes(routes!(tokens_list, tokens_create))
        .routes(routes!(tokens_revoke))
}

/// The organisation of the token.
#[utoipa::path(get, path = "/v1/org", tag = "org",
    responses((status = 200, body = OrgView), (status = 401, body = ErrorBody)))]
async fn whoami(Org(svc): Org) -> axum::Json<OrgView> {
    axum::Json(OrgView::from(svc.org()))
}

/// Lists the organisation's provider keys (never their secrets).
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses((status = 200, body = Vec<KeyView>), (status = 401, body = ErrorBody)))]
async fn keys_list(Org(svc): Org) -> Result<axum::Json<Vec<KeyView>>, ApiError> {
    let rows = blocking(svc, Service::keys_list).await?;
    Ok(axum::Json(rows.iter().map(KeyView::from).collect()))
}

/// Adds a provider key; it is encrypted before it is stored and never
/// returned.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = AddKey,
    responses((status = 201, body = KeyView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn keys_add(
    Org(svc): Org,
    SecretJson(body): SecretJson<AddKey>,
) -> Result<(StatusCode, axum::Json<KeyView>), ApiError> {
    let kind: ProviderKind = body
        .provider
        .parse()
        // The value is not repeated: a key pasted into the wrong field
        // must not come back in the answer.
        .map_err(|e: crate::providers::UnknownProvider| {
            ApiError::bad_request(e.to_string().replace(&format!("`{}`", e.0), "given"))
        })?;
    let secret = ProviderSecret::new(body.secret.expose_secret().to_owned());
    let compatible = crate::providers::CompatibleConfig {
        path: body.path.clone(),
        auth_header: body.auth_header.clone(),
        auth_scheme: body.auth_scheme.clone(),
    };
    let row = blocking(svc, move |s| {
        s.keys_add_configured(
            &body.name,
            kind,
            body.base_url.as_deref(),
            compatible,
            secret,
        )
    })
    .await?;
    Ok((StatusCode::CREATED, axum::Json(KeyView::from(&row))))
}

/// Stores a new version of a key; every claw's next call uses it.
#[utoipa::path(post, path = "/v1/keys/{name}/rotate", tag = "keys", request_body = RotateKey,
    params(("name" = String, Path, description = "Name of the key")),
    responses((status = 200, body = KeyView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn keys_rotate(
    Org(svc): Org,
    Path(name): Path<String>,
    SecretJson(body): SecretJson<RotateKey>,
) -> Result<axum::Json<KeyView>, ApiError> {
    let secret = ProviderSecret::new(body.secret.expose_secret().to_owned());
    let row = blocking(svc, move |s| s.keys_rotate(&name, secret)).await?;
    Ok(axum::Json(KeyView::from(&row)))
}

/// Revokes a key: no request with it starts after this answers.
#[utoipa::path(post, path = "/v1/keys/{name}/revoke", tag = "keys",
    params(("name" = String, Path, description = "Name of the key")),
    responses((status = 200, body = KeyView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn keys_revoke(
    Org(svc): Org,
    Path(name): Path<String>,
) -> Result<axum::Json<KeyView>, ApiError> {
    let row = blocking(svc, move |s| s.keys_revoke(&name)).await?;
    Ok(axum::Json(KeyView::from(&row)))
}

/// Lists the organisation's claws.
#[utoipa::path(get, path = "/v1/claws", tag = "claws",
    responses((status = 200, body = Vec<ClawView>), (status = 401, body = ErrorBody)))]
async fn claws_list(Org(svc): Org) -> Result<axum::Json<Vec<ClawView>>, ApiError> {
    Ok(axum::Json(
        blocking(svc, Service::claws_list_with_limits).await?,
    ))
}

/// A claw's run limits: each value its runs get and whether the claw sets
/// it or takes the host default.
#[utoipa::path(get, path = "/v1/claws/{name}/limits", tag = "claws",
    params(("name" = String, Path, description = "Name of the claw")),
    responses((status = 200, body = Vec<LimitView>), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn claws_limits(
    Org(svc): Org,
    Path(name): Path<String>,
) -> Result<axum::Json<Vec<LimitView>>, ApiError> {
    let (own, limits) = blocking(svc, move |s| s.claw_limits(&name)).await?;
    Ok(axum::Json(limit_views(&own, &limits)))
}

/// Sets a claw's own run limits, within the host's ceilings; from its next
/// run.
#[utoipa::path(put, path = "/v1/claws/{name}/limits", tag = "claws", request_body = LimitsRequest,
    params(("name" = String, Path, description = "Name of the claw")),
    responses((status = 200, body = Vec<LimitView>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn claws_set_limits(
    Org(svc): Org,
    Path(name): Path<String>,
    Json(body): Json<LimitsRequest>,
) -> Result<axum::Json<Vec<LimitView>>, ApiError> {
    let (own, limits) = blocking(svc, move |s| {
        s.claws_set_limits(&name, &body.overrides(), body.reset)
    })
    .await?;
    Ok(axum::Json(limit_views(&own, &limits)))
}

/// Deploys a claw component (the body, a `.wasm` built for
/// `wasm32-wasip2`), replacing the component of a claw of the same name and
/// keeping its assignment. It is validated before it is stored.
#[utoipa::path(put, path = "/v1/claws/{name}", tag = "claws",
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "The component (any content type is accepted, e.g. application/wasm)"),
    params(("name" = String, Path, description = "Name of the claw")),
    responses((status = 200, body = ClawView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn claws_deploy(
    Org(svc): Org,
    Path(name): Path<String>,
    Body(bytes): Body,
) -> Result<axum::Json<ClawView>, ApiError> {
    let row = blocking(svc, move |s| s.claws_deploy(&name, &bytes)).await?;
    Ok(axum::Json(ClawView::from(&row)))
}

/// Deletes a claw with its budgets and rate limits; its usage stays.
#[utoipa::path(delete, path = "/v1/claws/{name}", tag = "claws",
    params(("name" = String, Path, description = "Name of the claw")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn claws_delete(Org(svc): Org, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    blocking(svc, move |s| s.claws_delete(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Assigns a key and model to a claw; its next call uses them.
#[utoipa::path(put, path = "/v1/claws/{name}/assignment", tag = "claws", request_body = Assign,
    params(("name" = String, Path, description = "Name of the claw")),
    responses((status = 200, body = ClawView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn claws_assign(
    Org(svc): Org,
    Path(name): Path<String>,
    Json(body): Json<Assign>,
) -> Result<axum::Json<ClawView>, ApiError> {
    let row = blocking(svc, move |s| s.claws_assign(&name, &body.key, &body.model)).await?;
    Ok(axum::Json(ClawView::from(&row)))
}

/// Runs a claw on one input and answers its output with the usage of the
/// run. A claw that returns an error answers 200 with `error` set; one that
/// traps or passes a limit answers 422.
#[utoipa::path(post, path = "/v1/claws/{name}/runs", tag = "runs", request_body = RunRequest,
    params(("name" = String, Path, description = "Name of the claw")),
    responses((status = 200, body = RunView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn runs_create(
    Org(svc): Org,
    Path(name): Path<String>,
    Json(body): Json<RunRequest>,
) -> Result<axum::Json<RunView>, ApiError> {
    let conversation = match body.conversation_id {
        Some(id) => {
            check_conversation(&id)?;
            id
        }
        None => service::new_id("conv"),
    };
    let report = svc.run(&name, &conversation, &body.input).await?;
    let (output, error) = match report.output.result {
        Ok(text) => (Some(text), None),
        Err(text) => (None, Some(text)),
    };
    Ok(axum::Json(RunView {
        run_id: report.run_id,
        conversation_id: report.conversation_id,
        output,
        error,
        fuel_used: report.output.fuel_used,
        usage: report.usage,
    }))
}

fn check_conversation(id: &str) -> Result<(), ApiError> {
    // Control characters, and the invisible ones that reorder or hide text
    // (bidirectional overrides, zero-width), would let one id pass for
    // another in tables and logs.
    let invisible = |c: char| {
        c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
    };
    if id.is_empty() || id.chars().count() > 200 || id.chars().any(invisible) {
        return Err(ApiError::bad_request(
            "conversation_id must be 1 to 200 visible characters (no control, bidirectional or \
             zero-width characters)",
        ));
    }
    Ok(())
}

/// Usage totals, grouped.
#[utoipa::path(get, path = "/v1/usage", tag = "usage", params(UsageQuery),
    responses((status = 200, body = Vec<UsageTotals>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn usage_totals(
    Org(svc): Org,
    Query(q): Query<UsageQuery>,
) -> Result<axum::Json<Vec<UsageTotals>>, ApiError> {
    let group = q.by.map_or(UsageGroup::Claw, |g| g.0);
    let totals = blocking(svc, move |s| {
        s.usage(
            group,
            &UsageScope {
                claw: q.claw.as_deref(),
                conversation: q.conversation.as_deref(),
                since_ms: q.since_ms,
                until_ms: q.until_ms,
            },
        )
    })
    .await?;
    Ok(axum::Json(totals))
}

/// Usage records, one per provider call, oldest first.
#[utoipa::path(get, path = "/v1/usage/records", tag = "usage", params(RecordsQuery),
    responses((status = 200, body = Vec<UsageRecord>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn usage_records(
    Org(svc): Org,
    Query(q): Query<RecordsQuery>,
) -> Result<axum::Json<Vec<UsageRecord>>, ApiError> {
    let limit = q.limit.unwrap_or(200).clamp(1, 1000) as usize;
    let records = blocking(svc, move |s| {
        s.usage_records(
            &UsageScope {
                claw: q.claw.as_deref(),
                conversation: q.conversation.as_deref(),
                since_ms: q.since_ms,
                until_ms: q.until_ms,
            },
            q.run.as_deref(),
            limit,
        )
    })
    .await?;
    Ok(axum::Json(records))
}

/// The organisation's audit log, oldest first: key changes and uses, token
/// changes, refused exfiltration, and host-wide events.
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    responses((status = 200, body = Vec<AuditRecord>), (status = 401, body = ErrorBody)))]
async fn audit_list(Org(svc): Org) -> Result<axum::Json<Vec<AuditRecord>>, ApiError> {
    Ok(axum::Json(blocking(svc, Service::audit_records).await?))
}

/// The organisation's budgets.
#[utoipa::path(get, path = "/v1/budgets", tag = "budgets",
    responses((status = 200, body = Vec<Budget>), (status = 401, body = ErrorBody)))]
async fn budgets_list(Org(svc): Org) -> Result<axum::Json<Vec<Budget>>, ApiError> {
    Ok(axum::Json(blocking(svc, Service::budgets_list).await?))
}

/// Adds a budget.
#[utoipa::path(post, path = "/v1/budgets", tag = "budgets", request_body = BudgetRequest,
    responses((status = 201, body = Budget), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn budgets_add(
    Org(svc): Org,
    Json(body): Json<BudgetRequest>,
) -> Result<(StatusCode, axum::Json<Budget>), ApiError> {
    let (unit, amount) = budget_amount(body.tokens, body.usd)?;
    let budget = blocking(svc, move |s| {
        s.budgets_add(body.scope, body.claw.as_deref(), unit, body.per, amount)
    })
    .await?;
    Ok((StatusCode::CREATED, axum::Json(budget)))
}

/// A budget's unit and amount from `tokens` or `usd` (exactly one).
pub fn budget_amount(tokens: Option<i64>, usd: Option<f64>) -> Result<(BudgetUnit, i64), ApiError> {
    match (tokens, usd) {
        (Some(t), None) if t >= 0 => Ok((BudgetUnit::Tokens, t)),
        (None, Some(d)) if d.is_finite() && (0.0..=1e12).contains(&d) => {
            Ok((BudgetUnit::Micros, (d * 1e6).round() as i64))
        }
        _ => Err(ApiError::bad_request(
            "give exactly one of `tokens` (a non-negative integer) or `usd` (a non-negative number)",
        )),
    }
}

/// Removes a budget.
#[utoipa::path(delete, path = "/v1/budgets/{id}", tag = "budgets",
    params(("id" = i64, Path, description = "The budget's id")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn budgets_remove(Org(svc): Org, Path(id): Path<i64>) -> Result<StatusCode, ApiError> {
    blocking(svc, move |s| s.budgets_remove(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The organisation's rate limits.
#[utoipa::path(get, path = "/v1/rate-limits", tag = "rate-limits",
    responses((status = 200, body = Vec<RateLimit>), (status = 401, body = ErrorBody)))]
async fn rate_limits_list(Org(svc): Org) -> Result<axum::Json<Vec<RateLimit>>, ApiError> {
    Ok(axum::Json(blocking(svc, Service::limits_list).await?))
}

/// Sets the per-minute limits of one claw or one key; a limit left out
/// keeps its value.
#[utoipa::path(put, path = "/v1/rate-limits", tag = "rate-limits",
    request_body = RateLimitRequest,
    responses((status = 200, body = RateLimit), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn rate_limits_set(
    Org(svc): Org,
    Json(body): Json<RateLimitRequest>,
) -> Result<axum::Json<RateLimit>, ApiError> {
    let limit = blocking(svc, move |s| {
        s.limits_set(
            body.claw.as_deref(),
            body.key.as_deref(),
            body.rpm,
            body.tpm,
        )
    })
    .await?;
    Ok(axum::Json(limit))
}

/// Removes the limits of one claw or one key.
#[utoipa::path(delete, path = "/v1/rate-limits", tag = "rate-limits", params(LimitTarget),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn rate_limits_remove(
    Org(svc): Org,
    Query(q): Query<LimitTarget>,
) -> Result<StatusCode, ApiError> {
    blocking(svc, move |s| {
        s.limits_remove(q.claw.as_deref(), q.key.as_deref())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The organisation's API tokens (never their secrets).
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens",
    responses((status = 200, body = Vec<TokenView>), (status = 401, body = ErrorBody)))]
async fn tokens_list(Org(svc): Org) -> Result<axum::Json<Vec<TokenView>>, ApiError> {
    let rows = blocking(svc, Service::tokens_list).await?;
    Ok(axum::Json(rows.iter().map(TokenView::from).collect()))
}

/// Creates an API token of the organisation; the token is in this answer
/// only.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, body = NewTokenView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn tokens_create(
    Org(svc): Org,
    Json(body): Json<CreateToken>,
) -> Result<(StatusCode, axum::Json<NewTokenView>), ApiError> {
    let token = blocking(svc, move |s| s.tokens_create(&body.name)).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(NewTokenView {
            view: TokenView::from(&token.row),
            token: token.expose().to_owned(),
        }),
    ))
}

/// Revokes an API token: the next request bearing it answers 401.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "The token's id (`tok_…`)")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn tokens_revoke(Org(svc): Org, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    blocking(svc, move |s| s.tokens_revoke(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

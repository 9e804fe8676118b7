//! Errors as the API answers them, `{"error": {"code", "message"}}`, and the
//! extractors that turn malformed requests into such errors.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::cage::DeployError;
use crate::db::DbError;
use crate::service::ServiceError;

/// An error answer: an HTTP status, a stable machine-readable code, and a
/// message saying what to do.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code, such as `not_found`.
    pub code: &'static str,
    /// What went wrong and what to do.
    pub message: String,
}

/// The body of every error answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// An error's code and message.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code: `unauthorized`, `not_found`, `bad_request`,
    /// `payload_too_large`, `conflict`, `run_failed`, `timeout`, `internal`.
    pub code: String,
    /// What went wrong and what to do.
    pub message: String,
}

impl ApiError {
    /// An error of `status` and `code`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401: no token, or not a valid one.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send `Authorization: Bearer TOKEN` with a valid, unrevoked token of your \
             organisation (from `clawrun orgs create` or `clawrun tokens create`)",
        )
    }

    /// 500, with details only in the host's log.
    pub fn internal(what: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %what, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the host could not complete the request; it is logged, try again or tell the operator",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("valid"));
        }
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        use ServiceError as E;
        match e {
            E::UnknownClaw(_)
            | E::UnknownKey(_)
            | E::UnknownOrg(_)
            | E::UnknownToken(_)
            | E::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            E::KeyRevoked(_) | E::Db(DbError::Conflict(_)) => {
                Self::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            E::Deploy(DeployError::TooLarge(_)) => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                e.to_string(),
            ),
            E::Deploy(_) => Self::new(StatusCode::BAD_REQUEST, "invalid_component", e.to_string()),
            E::Invalid(_) => Self::bad_request(e.to_string()),
            E::Run(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "run_failed",
                format!("{e}; the usage of its calls so far is recorded"),
            ),
            E::Busy(_) => Self::new(StatusCode::TOO_MANY_REQUESTS, "busy", e.to_string()),
            E::NotInitialised(_) | E::Vault(_) | E::Db(_) | E::Engine(_) => Self::internal(&e),
        }
    }
}

/// A JSON body whose rejection is an [`ApiError`]: 400 for malformed JSON,
/// 413 past the body limit, 415 without a JSON content type.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        json_body(req, state, true).await.map(Self)
    }
}

/// A JSON body holding a secret: its rejection never quotes the body, only
/// where and how it is malformed.
#[derive(Debug)]
pub struct SecretJson<T>(pub T);

impl<T, S> FromRequest<S> for SecretJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        json_body(req, state, false).await.map(Self)
    }
}

/// The body as JSON; `quote` says whether a rejection may repeat what
/// serde said of it (never for bodies holding a secret).
async fn json_body<T, S>(req: Request, state: &S, quote: bool) -> Result<T, ApiError>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    match axum::Json::<T>::from_request(req, state).await {
        Ok(axum::Json(value)) => Ok(value),
        Err(rejection) => Err(json_rejection(&rejection, quote)),
    }
}

fn json_rejection(rejection: &JsonRejection, quote: bool) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`",
        ),
        JsonRejection::BytesRejection(bytes) if bytes.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            too_large()
        }
        JsonRejection::JsonDataError(e) if quote => ApiError::bad_request(format!(
            "the JSON body does not fit this route: {}; see /openapi.json",
            after_colon(&e.body_text())
        )),
        JsonRejection::JsonSyntaxError(e) if quote => ApiError::bad_request(format!(
            "the body is not valid JSON: {}",
            after_colon(&e.body_text())
        )),
        JsonRejection::JsonDataError(_) => ApiError::bad_request(
            "the JSON body does not fit this route (a field is missing, unknown or of the wrong \
             type); see /openapi.json. Its contents are not repeated here because it holds a secret",
        ),
        _ => ApiError::bad_request(
            "the body is not valid JSON; its contents are not repeated here because it holds a secret",
        ),
    }
}

/// axum's rejection text without its generic lead ("Failed to
/// deserialize ...: "), which the message replaces.
fn after_colon(text: &str) -> &str {
    text.split_once(": ").map_or(text, |(_, rest)| rest)
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!(
            "the body is too large: JSON bodies may be at most {} KiB, claw components at most {} MiB",
            super::JSON_BODY_LIMIT / 1024,
            crate::cage::MAX_COMPONENT_BYTES / (1024 * 1024)
        ),
    )
}

/// A raw body (a claw component) whose rejection is an [`ApiError`].
#[derive(Debug)]
pub struct Body(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let limit = crate::cage::MAX_COMPONENT_BYTES;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        match axum::body::to_bytes(req.into_body(), limit).await {
            Ok(bytes) => Ok(Self(bytes)),
            Err(e) => {
                let mut source: Option<&dyn std::error::Error> = Some(&e);
                while let Some(inner) = source {
                    if inner.is::<http_body_util::LengthLimitError>() {
                        return Err(too_large());
                    }
                    source = inner.source();
                }
                Err(ApiError::bad_request(format!(
                    "the body could not be read: {e}"
                )))
            }
        }
    }
}

/// Path parameters whose rejection is an [`ApiError`].
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(e @ PathRejection::FailedToDeserializePathParams(_)) => Err(ApiError::bad_request(
                format!("a path parameter is malformed: {}", e.body_text()),
            )),
            Err(e) => Err(ApiError::internal(&e.body_text())),
        }
    }
}

/// A query string whose rejection is an [`ApiError`].
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError::bad_request(format!(
                    "the query string is malformed: {}; see /openapi.json",
                    after_colon(&e.body_text())
                )))
            }
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}

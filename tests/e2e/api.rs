//! The HTTP API, driven through the router in process: tenancy (every route
//! answers 401 without a valid token, and 404 for another organisation's
//! objects), bad bodies, oversize uploads, and a claw deployed, assigned and
//! run through it.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::support::{DevProvider, OPENAI_KEY, claw};
use clawrun::service::{self, Host};

/// A host with two organisations, `acme` and `globex`.
struct Api {
    _dir: tempfile::TempDir,
    host: Arc<Host>,
    router: axum::Router,
    acme: String,
    globex: String,
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
    text: String,
}

impl Api {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        service::init(dir.path()).expect("init");
        let host = Host::open(dir.path()).expect("opens");
        let (_, acme) = host.orgs_create("acme").expect("acme");
        let (_, globex) = host.orgs_create("globex").expect("globex");
        let router = clawrun::api::router(host.clone());
        Self {
            _dir: dir,
            host,
            router,
            acme: acme.expose().to_owned(),
            globex: globex.expose().to_owned(),
        }
    }

    async fn call(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some((bytes, content_type)) => request
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(bytes)),
            None => request.body(Body::empty()),
        }
        .expect("request");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
            text,
        }
    }

    async fn json(&self, token: &str, method: &str, path: &str, body: Value) -> Answer {
        self.call(
            Some(token),
            method,
            path,
            Some((body.to_string().into_bytes(), "application/json")),
        )
        .await
    }

    async fn get(&self, token: &str, path: &str) -> Answer {
        self.call(Some(token), "GET", path, None).await
    }

    /// Gives `acme` a key on `dev`, the `hello` claw assigned to it, a
    /// budget and a rate limit; returns the budget's id.
    async fn furnish_acme(&self, dev: &DevProvider) -> i64 {
        let key = self
            .json(
                &self.acme,
                "POST",
                "/v1/keys",
                json!({"name": "k", "provider": "openai", "base_url": dev.base_url("openai"), "secret": OPENAI_KEY}),
            )
            .await;
        assert_eq!(key.status, StatusCode::CREATED, "{}", key.text);
        let wasm = std::fs::read(claw("hello")).expect("hello.wasm");
        let deployed = self
            .call(
                Some(&self.acme),
                "PUT",
                "/v1/claws/c",
                Some((wasm, "application/wasm")),
            )
            .await;
        assert_eq!(deployed.status, StatusCode::OK, "{}", deployed.text);
        let assigned = self
            .json(
                &self.acme,
                "PUT",
                "/v1/claws/c/assignment",
                json!({"key": "k", "model": "gpt-4o-mini"}),
            )
            .await;
        assert_eq!(assigned.status, StatusCode::OK, "{}", assigned.text);
        let budget = self
            .json(
                &self.acme,
                "POST",
                "/v1/budgets",
                json!({"scope": "claw", "claw": "c", "tokens": 100000, "per": "day"}),
            )
            .await;
        assert_eq!(budget.status, StatusCode::CREATED, "{}", budget.text);
        let limit = self
            .json(
                &self.acme,
                "PUT",
                "/v1/rate-limits",
                json!({"claw": "c", "rpm": 100}),
            )
            .await;
        assert_eq!(limit.status, StatusCode::OK, "{}", limit.text);
        budget.body["id"].as_i64().expect("budget id")
    }
}

/// Every route of the API, with a body it would accept.
fn every_route(budget: i64, token_id: &str) -> Vec<(&'static str, String, Option<Value>)> {
    vec![
        ("GET", "/v1/org".into(), None),
        ("GET", "/v1/keys".into(), None),
        (
            "POST",
            "/v1/keys".into(),
            Some(json!({"name": "x", "provider": "openai", "secret": "sk-xxxxxxxxxxxxxxxxxxxx"})),
        ),
        (
            "POST",
            "/v1/keys/k/rotate".into(),
            Some(json!({"secret": "sk-yyyyyyyyyyyyyyyyyyyy"})),
        ),
        ("POST", "/v1/keys/k/revoke".into(), None),
        ("GET", "/v1/claws".into(), None),
        ("PUT", "/v1/claws/c".into(), None),
        ("DELETE", "/v1/claws/c".into(), None),
        (
            "PUT",
            "/v1/claws/c/assignment".into(),
            Some(json!({"key": "k", "model": "m"})),
        ),
        ("GET", "/v1/claws/c/limits".into(), None),
        (
            "PUT",
            "/v1/claws/c/limits".into(),
            Some(json!({"fuel": 1_000_000})),
        ),
        (
            "POST",
            "/v1/claws/c/runs".into(),
            Some(json!({"input": "hi"})),
        ),
        ("GET", "/v1/usage?claw=c".into(), None),
        ("GET", "/v1/usage/records?claw=c".into(), None),
        ("GET", "/v1/audit".into(), None),
        ("GET", "/v1/budgets".into(), None),
        (
            "POST",
            "/v1/budgets".into(),
            Some(json!({"scope": "claw", "claw": "c", "tokens": 5, "per": "day"})),
        ),
        ("DELETE", format!("/v1/budgets/{budget}"), None),
        ("GET", "/v1/rate-limits".into(), None),
        (
            "PUT",
            "/v1/rate-limits".into(),
            Some(json!({"claw": "c", "rpm": 1})),
        ),
        ("DELETE", "/v1/rate-limits?claw=c".into(), None),
        ("GET", "/v1/tokens".into(), None),
        ("POST", "/v1/tokens".into(), Some(json!({"name": "t"}))),
        ("DELETE", format!("/v1/tokens/{token_id}"), None),
    ]
}

fn token_id(token: &str) -> String {
    token
        .strip_prefix("clawrun_")
        .and_then(|t| t.get(..20))
        .expect("token shape")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_401_without_a_valid_token() {
    let api = Api::new();
    let acme_id = token_id(&api.acme);
    // A revoked token, a token with a wrong secret, a malformed one, none.
    let revoked = api
        .json(&api.acme, "POST", "/v1/tokens", json!({"name": "old"}))
        .await;
    let revoked = revoked.body["token"].as_str().expect("token").to_owned();
    let gone = api
        .call(
            Some(&api.acme),
            "DELETE",
            &format!("/v1/tokens/{}", token_id(&revoked)),
            None,
        )
        .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    let wrong_secret = format!("clawrun_{acme_id}_{}", "A".repeat(43));
    let tokens: [Option<&str>; 5] = [
        None,
        Some(&revoked),
        Some(&wrong_secret),
        Some("not-a-token"),
        Some(""),
    ];
    for (method, path, body) in every_route(1, &acme_id) {
        for token in tokens {
            let body = body
                .as_ref()
                .map(|b| (b.to_string().into_bytes(), "application/json"));
            let answer = api.call(token, method, &path, body).await;
            assert_eq!(
                answer.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {token:?}: {}",
                answer.text
            );
            assert_eq!(
                answer.body["error"]["code"], "unauthorized",
                "{method} {path}"
            );
            assert!(
                answer.body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("Authorization: Bearer")),
                "{}",
                answer.text
            );
            assert_eq!(answer.headers[header::WWW_AUTHENTICATE], "Bearer");
        }
    }
    // Nothing was changed by any of them.
    assert_eq!(api.get(&api.acme, "/v1/keys").await.body, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_organisations_objects_answer_404_on_every_route() {
    let dev = DevProvider::start();
    let api = Api::new();
    let budget = api.furnish_acme(&dev).await;
    let acme_token = token_id(&api.acme);
    let wasm = std::fs::read(claw("hello")).expect("hello.wasm");

    for (method, path, body) in every_route(budget, &acme_token) {
        let creates = matches!(
            (method, path.as_str()),
            ("POST", "/v1/keys") | ("POST", "/v1/tokens") | ("PUT", "/v1/claws/c")
        );
        let lists = method == "GET" && !path.contains('?');
        if creates || lists {
            continue;
        }
        let body = match (method, path.as_str()) {
            ("PUT", "/v1/claws/c") => Some((wasm.clone(), "application/wasm")),
            _ => body.map(|b| (b.to_string().into_bytes(), "application/json")),
        };
        let answer = api.call(Some(&api.globex), method, &path, body).await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "globex {method} {path}: {}",
            answer.text
        );
        assert_eq!(answer.body["error"]["code"], "not_found", "{}", answer.text);
    }
    // Globex assigning acme's key to a claw of its own: no such key there.
    let deployed = api
        .call(
            Some(&api.globex),
            "PUT",
            "/v1/claws/g",
            Some((wasm.clone(), "application/wasm")),
        )
        .await;
    assert_eq!(deployed.status, StatusCode::OK);
    let assign = api
        .json(
            &api.globex,
            "PUT",
            "/v1/claws/g/assignment",
            json!({"key": "k", "model": "m"}),
        )
        .await;
    assert_eq!(assign.status, StatusCode::NOT_FOUND, "{}", assign.text);

    // Globex's lists hold nothing of acme's.
    for path in [
        "/v1/keys",
        "/v1/budgets",
        "/v1/rate-limits",
        "/v1/usage",
        "/v1/usage/records",
    ] {
        let answer = api.get(&api.globex, path).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, json!([]), "globex {path}: {}", answer.text);
    }
    let claws = api.get(&api.globex, "/v1/claws").await.body;
    assert_eq!(claws.as_array().map(Vec::len), Some(1), "{claws}");
    assert_eq!(claws[0]["name"], "g");
    let tokens = api.get(&api.globex, "/v1/tokens").await.body;
    assert!(!tokens.to_string().contains(&acme_token), "{tokens}");
    let audit = api.get(&api.globex, "/v1/audit").await.text;
    assert!(
        !audit.contains("\"key_id\":\"key_"),
        "globex sees acme's key events: {audit}"
    );
    let acme_org = api.get(&api.acme, "/v1/org").await.body["id"].clone();
    assert!(!audit.contains(acme_org.as_str().expect("id")), "{audit}");

    // And acme's objects are untouched: its key active at version 1, its
    // claw assigned, its budget and limit there, its token working.
    let keys = api.get(&api.acme, "/v1/keys").await.body;
    assert_eq!(keys[0]["state"], "active");
    assert_eq!(keys[0]["version"], 1);
    let claws = api.get(&api.acme, "/v1/claws").await.body;
    assert_eq!(claws[0]["model"], "gpt-4o-mini");
    assert_eq!(
        api.get(&api.acme, "/v1/budgets").await.body[0]["id"],
        budget
    );
    assert_eq!(
        api.get(&api.acme, "/v1/rate-limits").await.body[0]["rpm"],
        100
    );
    assert!(
        dev.requests().is_empty(),
        "globex's run reached the provider"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claw_is_deployed_assigned_and_run_through_the_api() {
    let dev = DevProvider::start();
    let api = Api::new();
    api.furnish_acme(&dev).await;
    let run = api
        .json(
            &api.acme,
            "POST",
            "/v1/claws/c/runs",
            json!({"input": "the API", "conversation_id": "conv-1"}),
        )
        .await;
    assert_eq!(run.status, StatusCode::OK, "{}", run.text);
    assert!(
        run.body["output"]
            .as_str()
            .is_some_and(|o| o.contains("the API")),
        "{}",
        run.text
    );
    assert_eq!(run.body["conversation_id"], "conv-1");
    let usage = run.body["usage"].as_array().expect("usage");
    assert_eq!(usage.len(), 1);
    let reported = dev.requests()[0]["usage"]["prompt_tokens"].clone();
    assert_eq!(usage[0]["input_tokens"], reported);

    let totals = api.get(&api.acme, "/v1/usage?by=conversation").await;
    assert_eq!(totals.body[0]["group"], "conv-1", "{}", totals.text);
    assert_eq!(totals.body[0]["calls"], 1);
    let records = api
        .get(
            &api.acme,
            &format!(
                "/v1/usage/records?run={}",
                run.body["run_id"].as_str().expect("run id")
            ),
        )
        .await;
    assert_eq!(records.body.as_array().map(Vec::len), Some(1));

    // Reassigning takes effect on the next run, without redeploying.
    let reassigned = api
        .json(
            &api.acme,
            "PUT",
            "/v1/claws/c/assignment",
            json!({"key": "k", "model": "gpt-4.1"}),
        )
        .await;
    assert_eq!(reassigned.status, StatusCode::OK);
    api.json(
        &api.acme,
        "POST",
        "/v1/claws/c/runs",
        json!({"input": "again"}),
    )
    .await;
    assert_eq!(dev.requests()[1]["model"], "gpt-4.1");

    // Revoked over the API: the next run's call is refused, not sent.
    let revoked = api
        .call(Some(&api.acme), "POST", "/v1/keys/k/revoke", None)
        .await;
    assert_eq!(revoked.body["state"], "revoked");
    let refused = api
        .json(
            &api.acme,
            "POST",
            "/v1/claws/c/runs",
            json!({"input": "no"}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::OK);
    assert!(
        refused.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("revoked")),
        "{}",
        refused.text
    );
    assert_eq!(dev.requests().len(), 2);

    // Rate limits removed once; removing them again finds none.
    let removed = api
        .call(Some(&api.acme), "DELETE", "/v1/rate-limits?claw=c", None)
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    let again = api
        .call(Some(&api.acme), "DELETE", "/v1/rate-limits?claw=c", None)
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "{}", again.text);

    // Deleting the claw keeps its usage.
    let deleted = api
        .call(Some(&api.acme), "DELETE", "/v1/claws/c", None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(api.get(&api.acme, "/v1/claws").await.body, json!([]));
    let records = api.get(&api.acme, "/v1/usage/records").await;
    assert_eq!(records.body.as_array().map(Vec::len), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_answer_400_with_a_message_that_says_what_to_do() {
    let api = Api::new();
    let t = api.acme.clone();
    // (method, path, body and its content type, what the message must say)
    type Case<'a> = (&'a str, &'a str, Option<(Vec<u8>, &'a str)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        ("POST", "/v1/keys", Some((b"{not json".to_vec(), "application/json")), "not valid JSON"),
        (
            "POST",
            "/v1/keys",
            Some((br#"{"name":"k","provider":"openai"}"#.to_vec(), "application/json")),
            "does not fit this route",
        ),
        (
            "POST",
            "/v1/keys",
            Some((
                br#"{"name":"k","provider":"gopher","secret":"sk-aaaaaaaaaaaaaaaaaaaaaaaa"}"#.to_vec(),
                "application/json",
            )),
            "unknown provider given: use",
        ),
        (
            "POST",
            "/v1/keys",
            Some((
                br#"{"name":"no spaces","provider":"openai","secret":"sk-aaaaaaaaaaaaaaaaaaaaaaaa"}"#.to_vec(),
                "application/json",
            )),
            "invalid key name",
        ),
        (
            "POST",
            "/v1/keys",
            Some((
                br#"{"name":"k","provider":"openai","secret":"OPENAI_API_KEY=sk-aaaaaaaaaaaaaaa"}"#.to_vec(),
                "application/json",
            )),
            "does not look like an API key",
        ),
        (
            "POST",
            "/v1/claws/c/runs",
            Some((br#"{"input": 5}"#.to_vec(), "application/json")),
            "input: invalid type",
        ),
        ("GET", "/v1/usage?by=planet", None, "cannot group usage by `planet`"),
        ("GET", "/v1/usage?since_ms=yesterday", None, "since_ms"),
        ("DELETE", "/v1/budgets/first", None, "path parameter"),
        (
            "POST",
            "/v1/budgets",
            Some((br#"{"scope":"org","per":"day"}"#.to_vec(), "application/json")),
            "exactly one of `tokens`",
        ),
        (
            "PUT",
            "/v1/rate-limits",
            Some((br#"{"rpm": 3}"#.to_vec(), "application/json")),
            "exactly one of --claw NAME or --key NAME",
        ),
        (
            "PUT",
            "/v1/claws/c",
            Some((b"this is not wasm".to_vec(), "application/wasm")),
            "not a WebAssembly",
        ),
    ];
    for (method, path, body, expected) in cases {
        let answer = api.call(Some(&t), method, path, body).await;
        assert!(
            answer.status == StatusCode::BAD_REQUEST,
            "{method} {path}: {} {}",
            answer.status,
            answer.text
        );
        let message = answer.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(expected),
            "{method} {path}: expected {expected:?} in {message:?}"
        );
    }
    // Invisible characters in a conversation id.
    let answer = api
        .json(
            &t,
            "POST",
            "/v1/claws/c/runs",
            json!({"input": "x", "conversation_id": "conv\u{202E}1"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
    assert!(
        answer.text.contains("visible characters"),
        "{}",
        answer.text
    );
    // A method a route does not take: the same error shape.
    let answer = api.call(Some(&t), "PATCH", "/v1/keys", None).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.body["error"]["code"], "method_not_allowed");
    // The scheme is case-insensitive (RFC 7235).
    let request = Request::builder()
        .uri("/v1/org")
        .header(header::AUTHORIZATION, format!("BEARER {t}"))
        .body(Body::empty())
        .expect("request");
    let response = api.router.clone().oneshot(request).await.expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    // A JSON route without a JSON content type.
    let answer = api
        .call(
            Some(&t),
            "POST",
            "/v1/tokens",
            Some((b"{}".to_vec(), "text/plain")),
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(answer.text.contains("Content-Type: application/json"));
    // An unknown route says where the API is described.
    let answer = api.get(&t, "/v2/keys").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(answer.text.contains("/openapi.json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_bodies_answer_413() {
    let api = Api::new();
    let limit = clawrun::cage::MAX_COMPONENT_BYTES;
    let mut huge = b"\0asm\x0d\0\x01\0".to_vec();
    huge.resize(limit + 1, 0);
    let answer = api
        .call(
            Some(&api.acme),
            "PUT",
            "/v1/claws/big",
            Some((huge, "application/wasm")),
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        answer.text
    );
    assert!(answer.text.contains("at most 32 MiB"), "{}", answer.text);

    let input = "x".repeat(clawrun::api::JSON_BODY_LIMIT + 1);
    let answer = api
        .json(
            &api.acme,
            "POST",
            "/v1/claws/c/runs",
            json!({ "input": input }),
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        answer.text
    );
    assert_eq!(answer.body["error"]["code"], "payload_too_large");
    assert_eq!(api.get(&api.acme, "/v1/claws").await.body, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_never_in_any_answer_after_it_is_added() {
    let dev = DevProvider::start();
    let api = Api::new();
    api.furnish_acme(&dev).await;
    let mut seen = String::new();
    // Every answer the organisation can read, including a malformed add
    // whose body holds the key, a rotation, and the dashboard's files.
    let malformed = format!(r#"{{"name": "k2", "provider": "openai", "secret": "{OPENAI_KEY}""#);
    seen += &api
        .call(
            Some(&api.acme),
            "POST",
            "/v1/keys",
            Some((malformed.into_bytes(), "application/json")),
        )
        .await
        .text;
    let typo = json!({"name": "k3", "provider": OPENAI_KEY, "secret": OPENAI_KEY});
    seen += &api.json(&api.acme, "POST", "/v1/keys", typo).await.text;
    // Pasted into the name or the base URL: refused, and not quoted back.
    for misplaced in [
        json!({"name": OPENAI_KEY, "provider": "openai", "secret": OPENAI_KEY}),
        json!({"name": "k4", "provider": "openai", "base_url": OPENAI_KEY, "secret": OPENAI_KEY}),
        json!({"name": OPENAI_KEY, "provider": "openai", "secret": "sk-other-0123456789abc"}),
        json!({"name": "k5", "provider": "openai", "base_url": OPENAI_KEY, "secret": "sk-other-0123456789abc"}),
    ] {
        let answer = api.json(&api.acme, "POST", "/v1/keys", misplaced).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
        seen += &answer.text;
    }
    seen += &api
        .json(
            &api.acme,
            "POST",
            "/v1/keys/k/rotate",
            json!({ "secret": format!("{OPENAI_KEY}-v2") }),
        )
        .await
        .text;
    seen += &api
        .json(
            &api.acme,
            "POST",
            "/v1/claws/c/runs",
            json!({"input": "hi"}),
        )
        .await
        .text;
    for path in [
        "/v1/keys",
        "/v1/claws",
        "/v1/usage",
        "/v1/usage/records",
        "/v1/audit",
        "/v1/tokens",
        "/",
        "/dashboard/app.js",
        "/openapi.json",
    ] {
        seen += &api.get(&api.acme, path).await.text;
    }
    assert!(seen.len() > 1000);
    assert!(
        !seen.contains(OPENAI_KEY) && !seen.contains(&OPENAI_KEY[8..30]),
        "a key came back in an answer"
    );
    drop(api.host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route() {
    let api = Api::new();
    let doc = api.call(None, "GET", "/openapi.json", None).await;
    assert_eq!(doc.status, StatusCode::OK);
    let paths = doc.body["paths"].as_object().expect("paths");
    for (method, path, _) in every_route(1, "tok_x") {
        let path = path.split('?').next().expect("path");
        let templated = path
            .replace("/budgets/1", "/budgets/{id}")
            .replace("/tokens/tok_x", "/tokens/{id}")
            .replace("/keys/k/", "/keys/{name}/")
            .replace("/claws/c", "/claws/{name}");
        assert!(
            paths
                .get(&templated)
                .and_then(|p| p.get(method.to_lowercase()))
                .is_some(),
            "{method} {templated} is not in the OpenAPI document"
        );
    }
    assert_eq!(
        doc.body["components"]["securitySchemes"]["token"]["scheme"],
        "bearer"
    );
}

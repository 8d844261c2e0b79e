//! The HTTP job API on a random port: each bad input gets its status and a
//! JSON reason and queues nothing; the bearer key is required when set; with
//! no key the API is open on loopback only; its OpenAPI document is served
//! without the key and matches docs/openapi.json.

use std::net::SocketAddr;

use herald::api::{ApiAuth, ApiState, router};
use herald::queue::JobQueue;
use herald::store::JobState;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::http;
use crate::queue::{Case, QueueEnv, queue_env};

struct Api {
    addr: SocketAddr,
    env: QueueEnv,
}

async fn serve(auth: impl FnOnce(&QueueEnv) -> ApiAuth) -> Api {
    let env = queue_env(Case::Sqlite).await;
    let queue = JobQueue::connect(&env.settings).await.unwrap();
    let state = ApiState {
        submitter: herald::queue::Submitter::new(env.db.store.clone(), queue.clone()),
        revoker: herald::ingress::revoke::Revoker::new(
            env.db.store.clone(),
            None,
            env.settings.celery.revoke_expires,
        ),
        store: env.db.store.clone(),
        queue,
        auth: auth(&env),
    };
    let mut limits = env.settings.api.clone();
    limits.max_body_size = 1024;
    limits.max_batch_body_size = 64 * 1024;
    // The dashboard's `/api/stats` is in the same document (its access
    // follows env.settings: no key, so closed).
    let dashboard = herald::dashboard::DashboardState::new(
        &env.settings,
        env.db.store.clone(),
        state.queue.clone(),
        None,
    );
    let app = router(state, &limits)
        .merge(herald::http::openapi::router())
        .merge(herald::dashboard::router(dashboard, true));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = herald::http::ServeLimits {
        header_timeout: std::time::Duration::from_secs(10),
        max_pending: 64,
        grace: std::time::Duration::from_secs(1),
    };
    tokio::spawn(herald::http::serve(
        listener,
        app,
        limits,
        std::future::pending(),
    ));
    Api { addr, env }
}

impl Api {
    /// One request; the status and the JSON body.
    async fn call(&self, method: &str, path: &str, headers: &[&str], body: &[u8]) -> (u16, Value) {
        http(self.addr, method, path, headers, body).await.unwrap()
    }

    async fn post(&self, body: &Value) -> (u16, Value) {
        self.call("POST", "/api/jobs", &[], body.to_string().as_bytes())
            .await
    }

    async fn post_batch(&self, jobs: Vec<Value>) -> (u16, Value) {
        let body = json!({ "jobs": jobs }).to_string();
        self.call("POST", "/api/jobs/batch", &[], body.as_bytes())
            .await
    }

    /// Jobs in the ledger, in any state.
    async fn recorded(&self) -> i64 {
        let mut total = 0;
        for state in [
            JobState::Queued,
            JobState::Retrying,
            JobState::Done,
            JobState::Dead,
        ] {
            total += self.env.db.store.count_jobs(state).await.unwrap();
        }
        total
    }
}

fn notify(user_id: i64) -> Value {
    json!({"kind": "notify", "payload": {"user_id": user_id, "title": "t", "message": "m",
        "notification_type": "info"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_answer_and_queues_nothing() {
    let api = serve(|_| ApiAuth::Development).await;
    let (status, body) = api.post(&json!({"kind": "fax", "payload": {}})).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("unknown job kind \"fax\"")
    );
    assert_eq!(body["kinds"].as_array().unwrap().len(), 5);

    let bad_payload = json!({"kind": "notify", "payload": {"user_id": "seven", "title": "t",
        "message": "m", "notification_type": "info"}});
    let (status, body) = api.post(&bad_payload).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("user_id")),
        "{body}"
    );

    let missing = json!({"kind": "notify", "payload": {"user_id": 1}});
    let (status, body) = api.post(&missing).await;
    assert_eq!((status, body["field"].as_str()), (422, Some("title")));
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("missing field `title`"),
        "{body}"
    );

    let without_type = json!({"kind": "notify", "payload": {"user_id": 1, "title": "t",
        "message": "m"}});
    let (status, body) = api.post(&without_type).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("notification_type")),
        "{body}"
    );
    let extra = json!({"kind": "notify", "payload": {"user_id": 1, "title": "t",
        "message": "m", "notification_type": "info", "colour": "red"}});
    let (status, body) = api.post(&extra).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("colour")),
        "{body}"
    );

    let (status, body) = api.call("POST", "/api/jobs", &[], b"{not json").await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid JSON body"),
        "{body}"
    );

    let (status, body) = api.post(&json!({"payload": {}})).await;
    assert_eq!(status, 400, "a body without kind: {body}");
    let (status, body) = api.post(&json!({"kind": "overdue_check"})).await;
    assert_eq!(status, 422, "a payload is required, even `{{}}`: {body}");

    let big = json!({"kind": "notify", "payload": {"user_id": 1, "title": "x".repeat(2000),
        "message": "m", "notification_type": "info"}});
    let (status, body) = api.post(&big).await;
    assert_eq!(status, 413);
    assert!(
        body["error"].as_str().unwrap().contains("length limit"),
        "{body}"
    );

    let mut empty_key = notify(1);
    empty_key["dedup_key"] = json!("");
    let (status, body) = api.post(&empty_key).await;
    assert_eq!((status, body["field"].as_str()), (422, Some("dedup_key")));

    assert_eq!(api.recorded().await, 0, "nothing was queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_accepted_shown_and_deduplicated() {
    let api = serve(|_| ApiAuth::Development).await;
    let mut body = notify(3);
    body["dedup_key"] = json!("once");
    // A year ahead of whatever day the suite runs, whole seconds.
    let run_at = (chrono::Utc::now() + chrono::Duration::days(365))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    body["run_at"] = json!(run_at);
    let (status, first) = api.post(&body).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(
        (first["state"].as_str(), first["existing"].as_bool()),
        (Some("queued"), Some(false))
    );
    let (status, again) = api.post(&body).await;
    assert_eq!(
        (status, &again["id"], again["existing"].as_bool()),
        (200, &first["id"], Some(true))
    );
    assert_eq!(api.recorded().await, 1);

    let id = first["id"].as_str().unwrap();
    let (status, job) = api.call("GET", &format!("/api/jobs/{id}"), &[], b"").await;
    assert_eq!(status, 200);
    assert_eq!(job["kind"], "notify");
    assert_eq!(job["state"], "queued");
    assert_eq!(job["attempts"], 0);
    assert_eq!(job["last_error"], Value::Null);
    assert_eq!(job["run_at"], run_at.as_str());

    let (status, body) = api.call("GET", "/api/jobs/NOPE", &[], b"").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("no job NOPE")));
    let (status, list) = api.call("GET", "/api/jobs?state=queued", &[], b"").await;
    assert_eq!((status, list["jobs"][0]["id"].as_str()), (200, Some(id)));
    let (status, _) = api.call("GET", "/api/jobs?state=lost", &[], b"").await;
    assert_eq!(status, 400);
    let (status, body) = api
        .call("POST", &format!("/api/jobs/{id}/retry"), &[], b"")
        .await;
    assert_eq!(status, 409, "only dead jobs are retried: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_queued_in_order_with_its_repeats_found() {
    let api = serve(|_| ApiAuth::Development).await;
    let mut earlier = notify(1);
    earlier["dedup_key"] = json!("earlier");
    let (_, held) = api.post(&earlier).await;
    let mut twice = notify(2);
    twice["dedup_key"] = json!("twice");
    let jobs = vec![notify(3), earlier, twice.clone(), notify(4), twice];
    let (status, body) = api.post_batch(jobs.clone()).await;
    assert_eq!(status, 202, "{body}");
    let answers = body["jobs"].as_array().unwrap();
    let existing: Vec<_> = answers.iter().map(|a| a["existing"].as_bool()).collect();
    assert_eq!(
        existing,
        [false, true, false, false, true].map(Some),
        "{body}"
    );
    assert_eq!(
        answers[1]["id"], held["id"],
        "the earlier job holds its key"
    );
    assert_eq!(
        answers[4]["id"], answers[2]["id"],
        "the first of a repeated key holds it"
    );
    assert_eq!(api.recorded().await, 4, "1 earlier + 3 new");
    let id = answers[3]["id"].as_str().unwrap();
    let (status, job) = api.call("GET", &format!("/api/jobs/{id}"), &[], b"").await;
    assert_eq!((status, &job["payload"]["user_id"]), (200, &json!(4)));

    let repeats = vec![jobs[1].clone(), jobs[2].clone()];
    let (status, body) = api.post_batch(repeats).await;
    assert_eq!(status, 200, "only repeats: nothing new is queued: {body}");
    assert_eq!(api.recorded().await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_job_in_a_batch_is_named_and_nothing_is_queued() {
    let api = serve(|_| ApiAuth::Development).await;
    let mut bad = notify(1);
    bad["payload"]["user_id"] = json!("seven");
    let (status, body) = api.post_batch(vec![notify(1), notify(2), bad]).await;
    assert_eq!(
        (status, body["index"].as_u64(), body["field"].as_str()),
        (422, Some(2), Some("jobs[2].payload.user_id")),
        "{body}"
    );
    assert!(
        body["error"].as_str().unwrap().starts_with("jobs[2]: "),
        "{body}"
    );

    let (status, body) = api
        .post_batch(vec![notify(1), json!({"kind": "fax", "payload": {}})])
        .await;
    assert_eq!((status, body["index"].as_u64()), (400, Some(1)), "{body}");
    assert_eq!(body["kinds"].as_array().unwrap().len(), 5);

    let mut empty_key = notify(1);
    empty_key["dedup_key"] = json!("");
    let (status, body) = api.post_batch(vec![empty_key]).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("jobs[0].dedup_key"))
    );

    let (status, body) = api.post_batch(vec![]).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("1 to 1000 jobs"),
        "{body}"
    );
    let small = json!({"kind": "overdue_check", "payload": {}});
    let (status, body) = api.post_batch(vec![small; 1001]).await;
    assert_eq!(status, 400, "over 1,000 jobs: {body}");

    // Bigger than the single route's limit is fine; over the batch's is not.
    let (status, body) = api.post_batch(vec![notify(1); 40]).await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = api.post_batch(vec![notify(1); 1000]).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(api.recorded().await, 40, "only the good batch was queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_key_is_required_and_compared() {
    let key = SecretString::from("k3y-for-tests-only");
    let api = serve(|_| ApiAuth::new(&key, true)).await;
    let (status, body) = api.post(&notify(1)).await;
    assert_eq!(status, 401);
    assert!(
        body["error"].as_str().unwrap().contains("missing"),
        "{body}"
    );
    let (status, body) = api
        .call(
            "POST",
            "/api/jobs",
            &["Authorization: Bearer wrong"],
            notify(1).to_string().as_bytes(),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid API key"))
    );
    let (status, _) = api.call("GET", "/api/jobs/x", &[], b"").await;
    assert_eq!(status, 401, "reading needs the key too");
    assert_eq!(api.recorded().await, 0);
    let (status, _) = api
        .call(
            "POST",
            "/api/jobs",
            &["Authorization: Bearer k3y-for-tests-only"],
            notify(1).to_string().as_bytes(),
        )
        .await;
    assert_eq!(status, 202);
}

/// Without a key the API is closed, on loopback too (a reverse proxy on
/// the same machine would make every client look local); only development
/// mode opens it, to clients on this machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_the_api_is_closed_outside_development() {
    let none = SecretString::from("");
    assert!(matches!(ApiAuth::new(&none, true), ApiAuth::Development));
    assert!(matches!(ApiAuth::new(&none, false), ApiAuth::Closed));
    let api = serve(|_| ApiAuth::new(&SecretString::from(""), false)).await;
    // What nginx's proxy_pass sends by default: a rewritten Host, no
    // X-Forwarded-For, from 127.0.0.1.
    let (status, body) = api
        .call(
            "POST",
            "/api/jobs",
            &["Host: 127.0.0.1"],
            notify(1).to_string().as_bytes(),
        )
        .await;
    assert_eq!(status, 401);
    assert!(
        body["error"].as_str().unwrap().contains("set api.key"),
        "{body}"
    );
    assert_eq!(api.recorded().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_served_without_the_key() {
    let key = SecretString::from("k3y-for-tests-only");
    let api = serve(|_| ApiAuth::new(&key, true)).await;
    let (status, served) = api.call("GET", "/api/openapi.json", &[], b"").await;
    assert_eq!(status, 200);
    let text = std::fs::read_to_string(crate::openapi::checked_in_path()).unwrap();
    let checked_in: Value = serde_json::from_str(&text).unwrap();
    assert!(
        served == checked_in,
        "docs/openapi.json differs from the served document: \
         run HERALD_BLESS=1 cargo test --test herald openapi"
    );
    let mut operations = Vec::new();
    for (path, item) in served["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            operations.push((method.to_uppercase(), path.clone(), operation.clone()));
        }
    }
    for (method, path) in [
        ("POST", "/api/jobs"),
        ("GET", "/api/jobs"),
        ("GET", "/api/jobs/{id}"),
        ("POST", "/api/jobs/{id}/retry"),
    ] {
        let found = operations.iter().find(|(m, p, _)| m == method && p == path);
        let (_, _, operation) = found.unwrap_or_else(|| panic!("{method} {path} undocumented"));
        assert_eq!(operation["security"], json!([{"api_key": []}]));
        assert_eq!(
            operation["responses"]["401"]["$ref"],
            "#/components/responses/Unauthorized"
        );
    }
    // Every documented route is served: the job routes refuse without the key.
    for (method, path, operation) in &operations {
        let (status, _) = api.call(method, &path.replace("{id}", "x"), &[], b"").await;
        let expected = if operation.get("security").is_some() {
            401
        } else {
            200
        };
        assert_eq!(status, expected, "{method} {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_only_plainly_local_json_requests_are_served() {
    let api = serve(|_| ApiAuth::Development).await;
    let body = notify(1).to_string();
    for (header, reason) in [
        ("Host: attacker.example", "loopback Host"),
        ("X-Forwarded-For: 203.0.113.9", "forwarded by a proxy"),
        ("Origin: https://attacker.example", "loopback origin"),
    ] {
        let (status, answer) = api
            .call("POST", "/api/jobs", &[header], body.as_bytes())
            .await;
        assert_eq!(status, 401, "{header}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(reason), "{header}: {error}");
    }
    // A cross-site page can post text/plain without asking: refused.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(api.addr).await.unwrap();
    let request = format!(
        "POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 415"), "{answer}");
    assert!(answer.contains("application/json"), "{answer}");
    assert_eq!(api.recorded().await, 0, "nothing was queued");
    let (status, _) = api.post(&notify(1)).await;
    assert_eq!(status, 202);
}

/// What the database would refuse is refused at submission with 422,
/// naming the field, instead of being accepted and dying after its
/// attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_database_would_refuse_is_refused_naming_the_field() {
    let api = serve(|_| ApiAuth::Development).await;
    let with = |key: &str, value: Value| {
        let mut body = notify(1);
        body["payload"][key] = value;
        body
    };
    let cases = [
        (with("title", json!("nul \u{0} inside")), "title"),
        (with("title", json!("x".repeat(300))), "title"),
        (
            with("notification_type", json!("t".repeat(60))),
            "notification_type",
        ),
        (with("user_id", json!(-1)), "user_id"),
        (
            with("data", json!({"note": ["fine", "bad\u{0}"]})),
            "data.note[1]",
        ),
        // schemathesis's F1 (docs/fuzzing.md): a NUL in the dedup key.
        (
            {
                let mut body = notify(1);
                body["dedup_key"] = json!("a\u{0}b");
                body
            },
            "dedup_key",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = api.post(&body).await;
        assert_eq!(
            (status, answer["field"].as_str()),
            (422, Some(field)),
            "{answer}"
        );
    }
    for run_at in ["9999-01-01T00:00:00Z", "tomorrow", "2026-13-01T00:00:00Z"] {
        let mut body = notify(1);
        body["run_at"] = json!(run_at);
        let (status, answer) = api.post(&body).await;
        assert_eq!(
            (status, answer["field"].as_str()),
            (422, Some("run_at")),
            "{run_at}: {answer}"
        );
    }
    // SQLite keeps ids in 8 bytes whatever the column's declared type.
    let mut big = notify(1);
    big["payload"]["user_id"] = json!(i64::MAX - 1);
    assert_eq!(api.post(&big).await.0, 202);
    let mut bad = notify(2);
    bad["payload"]["title"] = json!("y".repeat(256));
    let (status, answer) = api.post_batch(vec![notify(1), bad]).await;
    assert_eq!(
        (status, answer["field"].as_str()),
        (422, Some("jobs[1].payload.title")),
        "{answer}"
    );
    assert_eq!(api.recorded().await, 1, "only the valid one was queued");
}

/// The limits are the database's own: a 4-byte `user_id` column (Django's
/// default user) holds ids up to 2^31 - 1, and a widened title column takes
/// longer titles once its new size is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_follow_the_columns_of_the_database() {
    let db = crate::helpers::fresh_store(herald::store::Backend::Postgres).await;
    let herald::store::Store::Postgres(pool) = &db.store else {
        unreachable!()
    };
    for sql in [
        "ALTER TABLE notifications_notification ALTER COLUMN user_id TYPE integer",
        "ALTER TABLE notifications_notification ALTER COLUMN title TYPE varchar(500)",
    ] {
        sqlx::query(sql).execute(pool).await.unwrap();
    }
    let limits = db.store.column_limits().await.unwrap();
    assert_eq!(limits.user_id_max, i64::from(i32::MAX));
    assert_eq!(limits.title, Some(500));
    assert_eq!(limits.notification_type, Some(50));
    let job = |user_id: i64, title: &str| {
        herald::jobs::parse(
            "notify",
            json!({"user_id": user_id, "title": title, "message": "m", "notification_type": "x"}),
        )
        .unwrap()
    };
    assert!(
        job(2_147_483_647, &"t".repeat(500))
            .check_limits(&limits)
            .is_ok()
    );
    assert!(job(2_147_483_648, "t").check_limits(&limits).is_err());
    assert!(job(1, &"t".repeat(501)).check_limits(&limits).is_err());
}

/// Concurrent single submissions are recorded in shared groups, yet each
/// request gets its own answer: a bad one among them fails alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_single_submissions_are_answered_each_alone() {
    let api = std::sync::Arc::new(serve(|_| ApiAuth::Development).await);
    let calls: Vec<_> = (0..60)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                let mut body = notify(i + 1);
                if i == 17 {
                    body["payload"]["title"] = json!("x".repeat(300));
                }
                api.post(&body).await
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for (i, call) in calls.into_iter().enumerate() {
        let (status, answer) = call.await.unwrap();
        if i == 17 {
            assert_eq!((status, answer["field"].as_str()), (422, Some("title")));
        } else {
            assert_eq!(status, 202, "{answer}");
            assert!(ids.insert(answer["id"].as_str().unwrap().to_string()));
        }
    }
    assert_eq!(api.recorded().await, 59);
}

/// A dedup key is measured in characters, as the ledger's `varchar(255)` on
/// PostgreSQL and the schema's `maxLength` count them (schemathesis once
/// sent 200 characters of 600 bytes, valid by the schema, which herald
/// refused): 255 three-byte characters are recorded, 256 are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedup_key_is_measured_in_characters() {
    let env = queue_env(Case::Postgres).await;
    let queue = JobQueue::connect(&env.settings).await.unwrap();
    let store = &env.db.store;
    let payload = notify(3)["payload"].clone();
    let mut submission = crate::queue::submission("notify", payload);
    let key = "€".repeat(255);
    submission.dedup_key = Some(key.clone());
    let submitted = herald::queue::submit(store, &queue, submission.clone())
        .await
        .unwrap();
    let recorded = store.get_job_by_dedup_key(&key).await.unwrap().unwrap();
    assert_eq!(recorded.id, submitted.id);
    submission.dedup_key = Some("€".repeat(256));
    let error = herald::queue::submit(store, &queue, submission)
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("longer than 255 characters"),
        "{error}"
    );
}

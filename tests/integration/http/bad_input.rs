//! Bad input over HTTP against the real server, table-driven: every case names its exact
//! status and `error_code` (and, for a 422, a field listed in `errors`), no answer is a
//! 5xx, and nothing is written — after every case the stock of every product and each
//! demo user's order count (`meta.total`) are what they were before the table.
//!
//! Create cases send an otherwise valid order, so a server that wrongly accepted one
//! would write it and the check after the case would catch it. Inputs the API accepts
//! (merged duplicate lines, your own `user_id`, …) write orders: they are in
//! `edge_cases`, not in the table, and so is the expired token (a server of its own).

use std::cell::Cell;

use serde_json::{Value, json};

use super::client::{Client, Request, Session};
use super::harness::Stack;

/// One row: what goes out, and what must come back.
struct Case {
    name: String,
    request: Request,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
}

fn case(name: impl Into<String>, request: Request, status: u16, code: &'static str) -> Case {
    Case {
        name: name.into(),
        request,
        status,
        code,
        field: None,
    }
}

/// A 422 `VALIDATION_FAILED` naming `field`.
fn invalid(name: impl Into<String>, request: Request, field: &'static str) -> Case {
    Case {
        field: Some(field),
        ..case(name, request, 422, "VALIDATION_FAILED")
    }
}

/// What the table is built from: alice's session, and bob's PENDING order.
struct Ctx {
    alice: Session,
    bob: Session,
    bobs_order: u64,
    keys: Cell<u32>,
}

const SQL: &str = "' OR 1=1 --";
const SQL_PATH: &str = "%27%20OR%201%3D1%20--";

impl Ctx {
    /// A key no other case uses.
    fn key(&self) -> String {
        self.keys.set(self.keys.get() + 1);
        format!("bad-input-{}", self.keys.get())
    }

    /// `POST /api/orders` as alice with this JSON body.
    fn order(&self, body: Value) -> Request {
        Request::post_json("/api/orders", &body).bearer(&self.alice.token)
    }

    /// A valid create request with `raw` bytes as its body under `content_type`.
    fn raw(&self, content_type: Option<&str>, raw: impl Into<Vec<u8>>) -> Request {
        let request = Request::new("POST", "/api/orders").bearer(&self.alice.token);
        match content_type {
            Some(ct) => request.header("content-type", ct),
            None => request,
        }
        .body(raw)
    }

    fn valid_body(&self) -> String {
        json!({"items": [{"product_id": 1, "quantity": 1}], "idempotency_key": self.key()})
            .to_string()
    }

    fn get(&self, path: &str) -> Request {
        Request::get(path).bearer(&self.alice.token)
    }

    fn cancel(&self, id: &str) -> Request {
        Request::post_json(format!("/api/orders/{id}/cancel"), &json!({})).bearer(&self.alice.token)
    }

    fn login(&self, email: &str, password: &str) -> Request {
        Request::post_json(
            "/api/tokens",
            &json!({"email": email, "password": password}),
        )
    }
}

/// The create body of one Laptop Pro with `extra` merged in (the key is added when
/// `extra` has none).
fn body_with(ctx: &Ctx, extra: Value) -> Value {
    let mut body = json!({"items": [{"product_id": 1, "quantity": 1}]});
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    if body.get("idempotency_key").is_none() {
        body["idempotency_key"] = json!(ctx.key());
    }
    body
}

/// Create cases refused with 422 on one field: `(name, body fields, field at fault)`.
fn invalid_bodies(ctx: &Ctx) -> Vec<(&'static str, Value, &'static str)> {
    let line = |product: Value, quantity: Value| json!({"items": [{"product_id": product, "quantity": quantity}]});
    let q = |v: Value| line(json!(1), v);
    let p = |v: Value| line(v, json!(1));
    let one = |item: Value| json!({"items": [item]});
    let fifty_one: Vec<Value> = (0..51)
        .map(|i| json!({"product_id": 1 + i % 5, "quantity": 1}))
        .collect();
    let twice = json!([{"product_id": 2, "quantity": 6000}, {"product_id": 2, "quantity": 6000}]);
    let key = |v: Value| json!({"idempotency_key": v});
    vec![
        ("quantity 0", q(json!(0)), "items.0.quantity"),
        ("quantity -1", q(json!(-1)), "items.0.quantity"),
        ("quantity 1.5", q(json!(1.5)), "items.0.quantity"),
        ("quantity \"3\"", q(json!("3")), "items.0.quantity"),
        (
            "quantity 2^63",
            q(json!(9_223_372_036_854_775_808u64)),
            "items.0.quantity",
        ),
        ("quantity 10001", q(json!(10_001)), "items.0.quantity"),
        ("quantity null", q(Value::Null), "items.0.quantity"),
        (
            "quantity missing",
            one(json!({"product_id": 1})),
            "items.0.quantity",
        ),
        ("product_id 0", p(json!(0)), "items.0.product_id"),
        ("product_id -1", p(json!(-1)), "items.0.product_id"),
        ("product_id \"1\"", p(json!("1")), "items.0.product_id"),
        ("unknown product", p(json!(999)), "items.0.product_id"),
        ("0 items", json!({"items": []}), "items"),
        ("51 items", json!({"items": fifty_one}), "items"),
        ("items null", json!({"items": null}), "items"),
        (
            "items an object",
            json!({"items": {"product_id": 1}}),
            "items",
        ),
        ("an item not an object", json!({"items": [1]}), "items.0"),
        // Duplicate ids are merged (OrderDraft::new sums them): 6000 + 6000 is one
        // line of 12000, beyond Quantity's 10000, refused on `items`.
        (
            "duplicate ids merged beyond the quantity limit",
            json!({"items": twice}),
            "items",
        ),
        // Mass assignment.
        ("unknown field status", json!({"status": "PAID"}), "status"),
        ("unknown field price", json!({"price": "0.01"}), "price"),
        (
            "unknown field total_amount",
            json!({"total_amount": "0.01"}),
            "total_amount",
        ),
        (
            "item-level price",
            one(json!({"product_id": 1, "quantity": 1, "price": "0.01"})),
            "items.0.price",
        ),
        ("user_id not a number", json!({"user_id": "abc"}), "user_id"),
        // Idempotency keys.
        (
            "key of 256 chars",
            key(json!("k".repeat(256))),
            "idempotency_key",
        ),
        (
            "key with a control char",
            key(json!("key\u{1}x")),
            "idempotency_key",
        ),
        (
            "key with a newline",
            key(json!("key\nx")),
            "idempotency_key",
        ),
        ("key empty", key(json!("")), "idempotency_key"),
        ("key a number", key(json!(123)), "idempotency_key"),
        ("key not ASCII", key(json!("clé")), "idempotency_key"),
        (
            "SQL in the key (spaces)",
            key(json!(SQL)),
            "idempotency_key",
        ),
    ]
    .into_iter()
    .map(|(name, extra, field)| (name, body_with(ctx, extra), field))
    .collect()
}

fn cases(ctx: &Ctx) -> Vec<Case> {
    let mut c: Vec<Case> = invalid_bodies(ctx)
        .into_iter()
        .map(|(name, body, field)| invalid(name, ctx.order(body), field))
        .collect();
    let json_type = Some("application/json");
    let no_key = json!({"items": [{"product_id": 1, "quantity": 1}]});

    // Beyond u64, written as the integer it is (json! would make it a float).
    let huge =
        r#"{"items":[{"product_id":18446744073709551616,"quantity":1}],"idempotency_key":"huge"}"#;
    c.push(invalid(
        "product_id 2^64",
        ctx.raw(json_type, huge),
        "items.0.product_id",
    ));
    c.push(invalid(
        "items missing",
        ctx.order(json!({"idempotency_key": ctx.key()})),
        "items",
    ));
    // 1 + 1 of product 5 merge into one line of 2, beyond its stock of 1.
    let fives = json!([{"product_id": 5, "quantity": 1}, {"product_id": 5, "quantity": 1}]);
    let merged = ctx.order(json!({"items": fives, "idempotency_key": ctx.key()}));
    c.push(case(
        "duplicate ids merged beyond the stock",
        merged,
        409,
        "INSUFFICIENT_STOCK",
    ));
    let bobs_id = body_with(ctx, json!({"user_id": ctx.bob.user_id}));
    c.push(case(
        "another user's user_id",
        ctx.order(bobs_id),
        403,
        "FORBIDDEN",
    ));
    let mismatch = ctx
        .order(body_with(ctx, json!({})))
        .header("idempotency-key", "header-key");
    c.push(invalid(
        "key header differs from body",
        mismatch,
        "idempotency_key",
    ));
    let spaced = ctx.order(no_key.clone()).header("idempotency-key", "a b");
    c.push(invalid(
        "key header with a space",
        spaced,
        "idempotency_key",
    ));
    c.push(invalid(
        "key missing everywhere",
        ctx.order(no_key),
        "idempotency_key",
    ));
    // A valid key full of SQL metacharacters reaches the store, for an order that
    // cannot be filled.
    let sql_key =
        json!({"items": [{"product_id": 5, "quantity": 2}], "idempotency_key": "x'OR'1'='1';--"});
    c.push(case(
        "SQL metacharacters in a valid key",
        ctx.order(sql_key),
        409,
        "INSUFFICIENT_STOCK",
    ));

    // Bodies and media types.
    let oversized = {
        let body = ctx.valid_body();
        format!("{body}{}", " ".repeat(65_537 - body.len()))
    };
    let deep = format!("{{\"items\":{}{}}}", "[".repeat(200), "]".repeat(200));
    for (name, content_type, body, status, code) in [
        (
            "body over 64 KiB",
            json_type,
            oversized.into_bytes(),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            "JSON nested 200 deep",
            json_type,
            deep.into_bytes(),
            400,
            "MALFORMED_JSON",
        ),
        (
            "text/plain",
            Some("text/plain"),
            ctx.valid_body().into_bytes(),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "form",
            Some("application/x-www-form-urlencoded"),
            b"items=1".to_vec(),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "no content type",
            None,
            ctx.valid_body().into_bytes(),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        ("empty body", json_type, Vec::new(), 400, "MALFORMED_JSON"),
        (
            "broken JSON",
            json_type,
            b"{\"items\": [".to_vec(),
            400,
            "MALFORMED_JSON",
        ),
        (
            "a JSON array",
            json_type,
            b"[]".to_vec(),
            400,
            "MALFORMED_JSON",
        ),
        (
            "JSON null",
            json_type,
            b"null".to_vec(),
            400,
            "MALFORMED_JSON",
        ),
        (
            "a member named twice",
            json_type,
            br#"{"idempotency_key":"dup-a","idempotency_key":"dup-b","items":[{"product_id":2,"quantity":1}]}"#
                .to_vec(),
            400,
            "MALFORMED_JSON",
        ),
        (
            "invalid UTF-8",
            json_type,
            b"{\"items\": \"\xff\xfe\"}".to_vec(),
            400,
            "MALFORMED_JSON",
        ),
    ] {
        c.push(case(name, ctx.raw(content_type, body), status, code));
    }

    // Tokens: every refusal is the same 401.
    let list = || Request::get("/api/orders");
    let unknown = format!("ord_{}", "0".repeat(64));
    let other_scheme = format!("Token {}", ctx.alice.token);
    let valid_body: Value = serde_json::from_str(&ctx.valid_body()).unwrap();
    for (name, request) in [
        (
            "create without a token",
            Request::post_json("/api/orders", &valid_body),
        ),
        (
            "create with an unknown token",
            Request::post_json("/api/orders", &valid_body).bearer(&unknown),
        ),
        ("list without a token", list()),
        (
            "Basic scheme",
            list().header("authorization", "Basic YWxpY2U6cGFzc3dvcmQ="),
        ),
        (
            "Bearer and no token",
            list().header("authorization", "Bearer"),
        ),
        (
            "another scheme with a live token",
            list().header("authorization", &other_scheme),
        ),
        ("unknown token", list().bearer(&unknown)),
        ("SQL as the token", list().bearer(SQL)),
    ] {
        c.push(case(name, request, 401, "UNAUTHENTICATED"));
    }

    // Logins.
    for (name, email, password) in [
        ("SQL as the e-mail", SQL, "password"),
        ("SQL as the password", "alice@example.com", SQL),
        ("wrong password", "alice@example.com", "wrong"),
    ] {
        c.push(case(
            name,
            ctx.login(email, password),
            401,
            "INVALID_CREDENTIALS",
        ));
    }
    let tokens = |body: Value| Request::post_json("/api/tokens", &body);
    c.push(invalid("login without fields", tokens(json!({})), "email"));
    let admin = json!({"email": "alice@example.com", "password": "password", "admin": true});
    c.push(invalid(
        "login with an unknown field",
        tokens(admin),
        "admin",
    ));

    // Another user's order, and ids that name no order.
    let bob = ctx.bobs_order.to_string();
    for id in [
        bob.as_str(),
        "abc",
        "0",
        "18446744073709551616",
        "-1",
        SQL_PATH,
    ] {
        let label = if id == bob { "bob's order" } else { id };
        let show = ctx.get(&format!("/api/orders/{id}"));
        c.push(case(format!("show {label}"), show, 404, "NOT_FOUND"));
        c.push(case(
            format!("cancel {label}"),
            ctx.cancel(id),
            404,
            "NOT_FOUND",
        ));
    }
    for id in ["0", "abc", SQL_PATH, "18446744073709551616"] {
        let product = Request::get(format!("/api/products/{id}"));
        c.push(case(format!("product {id}"), product, 404, "NOT_FOUND"));
    }

    // List queries.
    for value in ["0", "51", "-1", "abc", "1000000000000000000000000000000"] {
        let request = ctx.get(&format!("/api/orders?per_page={value}"));
        c.push(invalid(format!("per_page={value}"), request, "per_page"));
    }
    for value in ["0", "-1", "abc", "1000000000000000000000000000000"] {
        let request = ctx.get(&format!("/api/orders?page={value}"));
        c.push(invalid(format!("page={value}"), request, "page"));
    }
    let status = |s: &str| ctx.get(&format!("/api/orders?status={s}"));
    c.push(invalid(
        "unknown status filter",
        status("SHIPPED"),
        "status",
    ));
    c.push(invalid(
        "SQL as the status filter",
        status(SQL_PATH),
        "status",
    ));
    // The reference filtered by user_id: here no one lists another user's orders.
    let by_user = ctx.get(&format!("/api/orders?user_id={}", ctx.bob.user_id));
    c.push(invalid("user_id filter", by_user, "user_id"));

    // Routes.
    c.push(case(
        "unknown route",
        ctx.get("/api/nowhere"),
        404,
        "NOT_FOUND",
    ));
    let delete = Request::new("DELETE", "/api/orders").bearer(&ctx.alice.token);
    c.push(case(
        "DELETE the order list",
        delete,
        405,
        "METHOD_NOT_ALLOWED",
    ));
    c
}

/// What must not change: every product's stock, and each demo user's order count.
async fn written(client: Client, users: &[Session; 3]) -> (Vec<(u64, i64)>, [u64; 3]) {
    let mut counts = [0; 3];
    for (count, user) in counts.iter_mut().zip(users) {
        *count = client.order_count(&user.token).await;
    }
    (client.stocks().await, counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_its_exact_status_and_code_and_writes_nothing() {
    // Bob's order stays PENDING (no worker starts it), so a cancel that skipped the
    // ownership check would write.
    let stack = Stack::with_env(&[("ORDERS_GRACE_PERIOD_MS", "600000")]).await;
    let client = stack.client;
    let users = client.login_all().await;
    let bobs = client
        .create(&users[1].token, &[(3, 1)], "bobs-order")
        .await;
    bobs.expect(201, "");
    let ctx = Ctx {
        alice: users[0].clone(),
        bob: users[1].clone(),
        bobs_order: bobs.data()["id"].as_u64().unwrap(),
        keys: Cell::new(0),
    };
    let mut before = written(client, &users).await;
    assert_eq!(before.1, [0, 1, 0]);

    let cases = cases(&ctx);
    assert!(cases.len() >= 40, "the table has {} cases", cases.len());
    println!("{} bad-input cases", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        let reply = client.send(case.request).await;
        let body = serde_json::from_slice::<Value>(&reply.body).unwrap_or_default();
        let listed = case.field.is_none_or(|f| body["errors"][f].is_array());
        if reply.status >= 500
            || reply.status != case.status
            || reply.code() != case.code
            || !listed
        {
            failures.push(format!(
                "{}: expected {} {} {:?}, got {reply:?}",
                case.name, case.status, case.code, case.field
            ));
        }
        let after = written(client, &users).await;
        if after != before {
            failures.push(format!(
                "{}: something was written: {after:?} after, {before:?} before ({reply:?})",
                case.name
            ));
            before = after;
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

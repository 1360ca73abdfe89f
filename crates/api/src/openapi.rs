//! `GET /openapi.json`: an OpenAPI 3.1 description of every route of [`crate::router`],
//! with the Salesforce error array as the shape of every refusal. It is what the contract
//! test (`crates/api/tests/openapi_contract.rs`) drives the service from.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::error::json_response;
use crate::version;

pub async fn document() -> Response {
    json_response(StatusCode::OK, &spec())
}

fn error_array() -> Value {
    json!({
        "description": "Refused: the Salesforce error array",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}}
    })
}

fn ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description,
           "schema": {"type": "string"}})
}

fn version_param() -> Value {
    let versions: Vec<String> = (version::OLDEST..=version::NEWEST)
        .map(|v| format!("v{v}.0"))
        .collect();
    json!({"name": "version", "in": "path", "required": true,
           "description": "The API version, v48.0 to v67.0",
           "schema": {"type": "string", "enum": versions}})
}

fn json_body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

/// One operation: its summary, parameters, body, success answer and the error array for
/// every other status.
fn operation(
    summary: &str,
    parameters: Vec<Value>,
    body: Option<Value>,
    success: (&str, Value),
    secured: bool,
) -> Value {
    let mut op = Map::new();
    op.insert("summary".into(), json!(summary));
    op.insert("parameters".into(), Value::Array(parameters));
    if let Some(body) = body {
        op.insert("requestBody".into(), body);
    }
    op.insert(
        "responses".into(),
        json!({success.0: success.1, "default": error_array()}),
    );
    if !secured {
        op.insert("security".into(), json!([]));
    }
    Value::Object(op)
}

fn query_operation(posted: bool) -> Value {
    let q = json!({"name": "q", "in": "query", "required": true,
                   "description": "The SOQL query", "schema": {"type": "string"}});
    let options = json!({"name": "Sforce-Query-Options", "in": "header", "required": false,
                         "description": "batchSize=N (200 to 2000)", "schema": {"type": "string"}});
    if posted {
        operation(
            "Runs a SOQL query sent as a form (for texts too long for a URL)",
            vec![version_param(), options],
            Some(
                json!({"required": true, "content": {"application/x-www-form-urlencoded": {
                    "schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
                }}}),
            ),
            ("200", ok("The first batch", reference("QueryResult"))),
            true,
        )
    } else {
        operation(
            "Runs a SOQL query",
            vec![version_param(), q, options],
            None,
            ("200", ok("The first batch", reference("QueryResult"))),
            true,
        )
    }
}

/// The whole document.
pub fn spec() -> Value {
    let mut paths = Map::new();
    let data = "/services/data/{version}";
    paths.insert(
        "/healthz".into(),
        json!({"get": operation("Liveness: whether the database is migrated", vec![], None,
            ("200", ok("Serving", reference("Health"))), false)}),
    );
    paths.insert(
        "/readyz".into(),
        json!({"get": operation("Readiness", vec![], None,
            ("200", ok("Ready", reference("Health"))), false)}),
    );
    paths.insert(
        "/services/data".into(),
        json!({"get": operation("The API versions", vec![], None,
            ("200", ok("Every version", json!({"type": "array", "items": {"type": "object",
                "required": ["label", "url", "version"],
                "properties": {"label": {"type": "string"}, "url": {"type": "string"},
                               "version": {"type": "string"}}}}))), false)}),
    );
    paths.insert(
        "/services/oauth2/token".into(),
        json!({"post": {
            "summary": "OAuth token: client_credentials or password grant",
            "security": [],
            "requestBody": {"required": true, "content": {"application/x-www-form-urlencoded": {
                "schema": {"type": "object", "properties": {
                    "grant_type": {"type": "string", "enum": ["client_credentials", "password"]},
                    "client_id": {"type": "string"}, "client_secret": {"type": "string"},
                    "username": {"type": "string"}, "password": {"type": "string"}},
                    "required": ["grant_type"]}}}},
            "responses": {
                "200": ok("A token", json!({"type": "object",
                    "required": ["access_token", "instance_url", "token_type"],
                    "properties": {"access_token": {"type": "string"},
                                   "instance_url": {"type": "string"},
                                   "token_type": {"type": "string"}}})),
                "default": ok("Refused", json!({"type": "object", "required": ["error"],
                    "properties": {"error": {"type": "string"},
                                   "error_description": {"type": "string"}}}))
            }
        }}),
    );
    paths.insert(
        "/webhooks/adyen".into(),
        json!({"post": {
            "summary": "Adyen standard notifications (signed with HMAC, no token)",
            "security": [],
            "requestBody": json_body(json!({"type": "object", "properties": {
                "live": {"type": "string"},
                "notificationItems": {"type": "array", "maxItems": 100,
                                      "items": {"type": "object"}}}})),
            "responses": {
                "200": {"description": "Stored", "content": {"text/plain": {"schema": {"type": "string"}}}},
                "default": error_array()
            }
        }}),
    );
    paths.insert(
        "/openapi.json".into(),
        json!({"get": operation("This document", vec![], None,
            ("200", ok("OpenAPI 3.1", json!({"type": "object"}))), false)}),
    );
    paths.insert(
        data.into(),
        json!({"get": operation("The resources of a version", vec![version_param()], None,
            ("200", ok("Resource URLs", json!({"type": "object"}))), true)}),
    );
    for resource in ["query", "queryAll"] {
        for slash in ["", "/"] {
            paths.insert(
                format!("{data}/{resource}{slash}"),
                json!({"get": query_operation(false), "post": query_operation(true)}),
            );
        }
        paths.insert(
            format!("{data}/{resource}/{{locator}}"),
            json!({"get": operation("The next batch of a query (its nextRecordsUrl)",
                vec![version_param(), path_param("locator", "From nextRecordsUrl")], None,
                ("200", ok("A batch", reference("QueryResult"))), true)}),
        );
    }
    let create = operation(
        "Creates a record (ingest)",
        vec![version_param(), path_param("type", "An sObject type")],
        Some(json_body(json!({"type": "object"}))),
        ("201", ok("Created", reference("SaveResult"))),
        true,
    );
    paths.insert(format!("{data}/sobjects/{{type}}"), json!({"post": create}));
    paths.insert(
        format!("{data}/sobjects/{{type}}/"),
        json!({"post": create}),
    );
    paths.insert(
        format!("{data}/sobjects/{{type}}/{{id}}"),
        json!({
            "get": operation("Reads a record",
                vec![version_param(), path_param("type", "An sObject type"),
                     path_param("id", "A 15- or 18-character id"),
                     json!({"name": "fields", "in": "query", "required": false,
                            "schema": {"type": "string"}})],
                None, ("200", ok("The record", reference("Record"))), true),
            "patch": operation("Changes the Status of a ProcessException or Refund",
                vec![version_param(), path_param("type", "ProcessException or Refund"),
                     path_param("id", "A 15- or 18-character id")],
                Some(json_body(json!({"type": "object",
                    "properties": {"Status": {"type": "string"}}}))),
                ("204", json!({"description": "Changed"})), true)
        }),
    );
    paths.insert(
        format!("{data}/commerce/order-management/order-summaries/{{id}}/async-actions/ensure-refunds-async"),
        json!({"post": {
            "summary": "Ensures refunds of a credit memo and/or excess funds (asynchronous)",
            "parameters": [version_param(), path_param("id", "The OrderSummary id"),
                json!({"name": "Idempotency-Key", "in": "header", "required": false,
                       "schema": {"type": "string"}})],
            "requestBody": json_body(json!({"type": "object", "properties": {
                "creditMemoId": {"type": "string"},
                "excessFundsAmount": {"type": ["number", "string"]},
                "isAllowPartial": {"type": "boolean"},
                "sequences": {"type": "array"}}})),
            "responses": {
                "201": ok("Accepted: the background operation", reference("AsyncResult")),
                "200": ok("The same request again (Idempotency-Key)", reference("AsyncResult")),
                "default": {"description": "Refused: the \"Error with Output\" array",
                    "content": {"application/json": {"schema": reference("ErrorsWithOutput")}}}
            }
        }}),
    );
    paths.insert(
        format!("{data}/commerce/order-management/order-payment-summaries"),
        json!({"post": operation("Creates an OrderPaymentSummary over payments",
            vec![version_param()],
            Some(json_body(json!({"type": "object", "properties": {
                "orderSummaryId": {"type": "string"},
                "paymentIds": {"type": "array", "items": {"type": "string"}}},
                "required": ["orderSummaryId", "paymentIds"]}))),
            ("201", ok("Created", json!({"type": "object",
                "required": ["orderPaymentSummaryId", "success"],
                "properties": {"orderPaymentSummaryId": {"type": "string"},
                               "success": {"type": "boolean"}}}))), true)}),
    );

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "refunds",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Salesforce Order Management ensure-refunds-async and the sObject REST it relies on. Bounds on every request are listed in README (\"Limits\")."
        },
        "security": [{"bearer": []}],
        "paths": Value::Object(paths),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Errors": {"type": "array", "minItems": 1, "items": {"type": "object",
                    "required": ["errorCode", "message"],
                    "properties": {"errorCode": {"type": "string"}, "message": {"type": "string"},
                                   "fields": {"type": "array", "items": {"type": "string"}}}}},
                "ErrorsWithOutput": {"type": "array", "minItems": 1, "items": {"type": "object",
                    "required": ["errorCode", "message"],
                    "properties": {"errorCode": {"type": "string"}, "message": {"type": "string"},
                                   "output": {"type": "object"}}}},
                "Health": {"type": "object", "required": ["status"],
                    "properties": {"status": {"type": "string"}}},
                "QueryResult": {"type": "object", "required": ["totalSize", "done", "records"],
                    "properties": {"totalSize": {"type": "integer", "minimum": 0},
                                   "done": {"type": "boolean"},
                                   "nextRecordsUrl": {"type": "string"},
                                   "records": {"type": "array", "items": reference("Record")}}},
                "Record": {"type": "object", "required": ["attributes"],
                    "properties": {"attributes": {"type": "object",
                        "required": ["type", "url"],
                        "properties": {"type": {"type": "string"}, "url": {"type": "string"}}}}},
                "SaveResult": {"type": "object", "required": ["id", "success", "errors"],
                    "properties": {"id": {"type": "string"}, "success": {"type": "boolean"},
                                   "errors": {"type": "array"}}},
                "AsyncResult": {"type": "object",
                    "required": ["backgroundOperationId", "success", "errors"],
                    "properties": {"backgroundOperationId": {"type": "string"},
                                   "success": {"type": "boolean"}, "errors": {"type": "array"}}}
            }
        }
    })
}

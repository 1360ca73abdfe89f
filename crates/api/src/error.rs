//! The one error type of the API and its two Salesforce body shapes.

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// An error answer. `with_output` selects the "Error with Output" shape that the
/// ensure-refunds resource uses; every other resource answers the plain error array.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub fields: Vec<String>,
    pub with_output: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            fields: Vec::new(),
            with_output: false,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found() -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        )
    }

    pub fn json_parser(message: impl Into<String>) -> ApiError {
        ApiError::bad_request("JSON_PARSER_ERROR", message)
    }

    pub fn field(mut self, name: &str) -> ApiError {
        self.fields.push(name.to_string());
        self
    }

    pub fn with_output(mut self) -> ApiError {
        self.with_output = true;
        self
    }

    /// A failure that is ours, not the client's: logged in full with a correlation id,
    /// answered with the id only.
    pub fn internal(error: &dyn std::fmt::Display) -> ApiError {
        let correlation = format!("{:016x}", rand::random::<u64>());
        tracing::error!(correlation_id = %correlation, error = %error, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN_EXCEPTION",
            format!("An unexpected error occurred. Please include this ErrorId if you contact support: {correlation}"),
        )
    }

    fn body(&self) -> Value {
        if self.with_output {
            json!([{
                "errorCode": self.code,
                "message": self.message,
                "enhancedErrorType": null,
                "output": {
                    "backgroundOperationId": null,
                    "errors": [{"errorCode": self.code, "message": self.message}],
                    "success": false
                }
            }])
        } else if self.fields.is_empty() {
            json!([{"errorCode": self.code, "message": self.message}])
        } else {
            json!([{"errorCode": self.code, "message": self.message, "fields": self.fields}])
        }
    }
}

impl From<refunds_store::StoreError> for ApiError {
    fn from(e: refunds_store::StoreError) -> ApiError {
        ApiError::internal(&e)
    }
}

/// The extractors' own rejections answer plain text; handlers take them as `Result`s and
/// convert them here so every answer keeps the Salesforce JSON shape.
impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> ApiError {
        if crate::server::timed_out(&rejection) {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "REQUEST_TIMEOUT",
                "The request body was not received in time",
            )
        } else if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "EXCEEDED_MAX_SIZE_REQUEST",
                "The request body exceeds the maximum size allowed",
            )
        } else {
            ApiError::json_parser(format!(
                "Cannot read the request body: {}",
                rejection.body_text()
            ))
        }
    }
}

/// A path segment that cannot be decoded names no resource.
impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> ApiError {
        ApiError::not_found()
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::bad_request(
            "MALFORMED_QUERY",
            format!("Invalid query string: {}", rejection.body_text()),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = json_response(self.status, &self.body());
        if self.status == StatusCode::REQUEST_TIMEOUT {
            // The rest of a body that came too slowly is not waited for.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// Every body is JSON with Salesforce's content type.
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    response
}

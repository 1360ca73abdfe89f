//! The mapping between Salesforce field names and columns, one [`ObjectDef`] per object.
//!
//! Generic reads (`GET /sobjects/{Type}/{id}`) and ingest (`POST /sobjects/{Type}`) are
//! driven by these tables, so a column name in SQL always comes from here and never from
//! a request.

use refunds_domain::ObjectType;

/// How a field is stored and rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// The record's own id.
    Id,
    /// An id of another record.
    Reference(ObjectType),
    Text,
    /// Text restricted to a list of values.
    Picklist(&'static [&'static str]),
    /// Minor units of the record's `CurrencyIsoCode`.
    Money,
    /// Milliseconds since the Unix epoch.
    DateTime,
    Int,
}

/// Whether (and how) a field may be given when a record is created through the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Create {
    /// Set by the system only.
    No,
    Required,
    /// May be omitted; the default (if any) is the text a client could have sent.
    Optional(Option<&'static str>),
}

#[derive(Debug)]
pub struct FieldDef {
    pub name: &'static str,
    /// A column of the object's table, or an SQL expression over its columns.
    pub sql: &'static str,
    pub kind: FieldKind,
    pub create: Create,
}

#[derive(Debug)]
pub struct ObjectDef {
    pub ty: ObjectType,
    pub table: &'static str,
    pub fields: &'static [FieldDef],
}

impl ObjectDef {
    pub fn field(&self, name: &str) -> Option<&'static FieldDef> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }

    pub fn has_currency(&self) -> bool {
        self.field("CurrencyIsoCode").is_some()
    }
}

const fn f(name: &'static str, sql: &'static str, kind: FieldKind, create: Create) -> FieldDef {
    FieldDef {
        name,
        sql,
        kind,
        create,
    }
}

use Create::{No, Optional, Required};
use FieldKind::{DateTime, Id, Int, Money, Picklist, Reference, Text};

const ID: FieldDef = f("Id", "id", Id, No);
const CURRENCY: FieldDef = f("CurrencyIsoCode", "currency_iso_code", Text, Optional(None));
const CREATED: FieldDef = f("CreatedDate", "created_date", DateTime, No);
const MODIFIED: FieldDef = f("LastModifiedDate", "last_modified_date", DateTime, No);

pub const CREDIT_MEMO_STATUSES: &[&str] = &["Pending", "Posted", "Canceled", "Error"];
pub const PROCESS_EXCEPTION_STATUSES: &[&str] =
    &["New", "Triaged", "Paused", "Resolved", "Ignored", "Voided"];
/// Process exception statuses that count in `OrderSummary.ActiveProcessExceptionCount`.
pub const ACTIVE_PROCESS_EXCEPTION_STATUSES: &[&str] = &["New", "Triaged"];

/// SQL that holds for an active process exception (`status IN ('New', 'Triaged')`); the
/// statuses are this file's constants, never input.
pub fn active_process_exception_sql() -> String {
    crate::lists::in_list(
        "status",
        ACTIVE_PROCESS_EXCEPTION_STATUSES
            .iter()
            .map(|s| format!("'{s}'")),
    )
}

static ORDER_SUMMARY: ObjectDef = ObjectDef {
    ty: ObjectType::OrderSummary,
    table: "order_summaries",
    fields: &[
        ID,
        f("OrderNumber", "order_number", Text, Required),
        f(
            "OrderLifeCycleType",
            "order_life_cycle_type",
            Picklist(&["MANAGED", "UNMANAGED"]),
            Optional(Some("MANAGED")),
        ),
        f("Status", "status", Text, Optional(Some("Created"))),
        f(
            "GrandTotalAmount",
            "grand_total_amount",
            Money,
            Optional(Some("0")),
        ),
        f(
            "ActiveProcessExceptionCount",
            "active_process_exception_count",
            Int,
            No,
        ),
        CURRENCY,
        CREATED,
        MODIFIED,
    ],
};

static PAYMENT_GATEWAY: ObjectDef = ObjectDef {
    ty: ObjectType::PaymentGateway,
    table: "payment_gateways",
    fields: &[
        ID,
        f("PaymentGatewayName", "payment_gateway_name", Text, Required),
        f(
            "ProviderType",
            "provider_type",
            Picklist(&["Simulator", "Stripe", "Adyen"]),
            Required,
        ),
        f(
            "Status",
            "status",
            Picklist(&["Active", "Inactive"]),
            Optional(Some("Active")),
        ),
        f("BaseUrl", "base_url", Text, Optional(None)),
        f(
            "MerchantCredentialEnv",
            "merchant_credential_env",
            Text,
            Optional(None),
        ),
        f("MerchantAccount", "merchant_account", Text, Optional(None)),
        f(
            "WebhookHmacKeyEnv",
            "webhook_hmac_key_env",
            Text,
            Optional(None),
        ),
        f("TimeoutMs", "timeout_ms", Int, Optional(None)),
        f(
            "ConnectTimeoutMs",
            "connect_timeout_ms",
            Int,
            Optional(None),
        ),
        f(
            "ResultCodeMapping",
            "result_code_mapping",
            Text,
            Optional(None),
        ),
        f(
            "MaxConcurrentRequests",
            "max_concurrent_requests",
            Int,
            Optional(None),
        ),
        f(
            "MaxRequestsPerSecond",
            "max_requests_per_second",
            Int,
            Optional(None),
        ),
        CREATED,
        MODIFIED,
    ],
};

const AVAILABLE_TO_REFUND: &str =
    "(CASE WHEN captured_amount - refunded_amount - pending_refund_amount > 0 \
     THEN captured_amount - refunded_amount - pending_refund_amount ELSE 0 END)";

static ORDER_PAYMENT_SUMMARY: ObjectDef = ObjectDef {
    ty: ObjectType::OrderPaymentSummary,
    table: "order_payment_summaries",
    fields: &[
        ID,
        f(
            "OrderSummaryId",
            "order_summary_id",
            Reference(ObjectType::OrderSummary),
            No,
        ),
        f("Method", "method", Text, No),
        f("Type", "type", Text, No),
        f("AuthorizationAmount", "authorization_amount", Money, No),
        f("CapturedAmount", "captured_amount", Money, No),
        f("RefundedAmount", "refunded_amount", Money, No),
        f("PendingRefundAmount", "pending_refund_amount", Money, No),
        f("AvailableToRefundAmount", AVAILABLE_TO_REFUND, Money, No),
        f(
            "LastPaymentGatewayLogId",
            "last_payment_gateway_log_id",
            Reference(ObjectType::PaymentGatewayLog),
            No,
        ),
        f(
            "LastPaymentGatewayMessage",
            "last_payment_gateway_message",
            Text,
            No,
        ),
        CURRENCY,
        CREATED,
        MODIFIED,
    ],
};

static PAYMENT: ObjectDef = ObjectDef {
    ty: ObjectType::Payment,
    table: "payments",
    fields: &[
        ID,
        f(
            "OrderPaymentSummaryId",
            "order_payment_summary_id",
            Reference(ObjectType::OrderPaymentSummary),
            No,
        ),
        f(
            "PaymentGatewayId",
            "payment_gateway_id",
            Reference(ObjectType::PaymentGateway),
            Required,
        ),
        f("Amount", "amount", Money, Required),
        f(
            "Type",
            "type",
            Picklist(&["Capture", "Sale"]),
            Optional(Some("Capture")),
        ),
        f(
            "Status",
            "status",
            Picklist(&["Draft", "Processed", "Canceled"]),
            Optional(Some("Processed")),
        ),
        f(
            "GatewayRefNumber",
            "gateway_ref_number",
            Text,
            Optional(None),
        ),
        f("TotalRefundApplied", "total_refund_applied", Money, No),
        f("NetRefundApplied", "total_refund_applied", Money, No),
        f("Balance", "(amount - total_refund_applied)", Money, No),
        CURRENCY,
        CREATED,
        MODIFIED,
    ],
};

static INVOICE: ObjectDef = ObjectDef {
    ty: ObjectType::Invoice,
    table: "invoices",
    fields: &[
        ID,
        f(
            "ReferenceEntityId",
            "reference_entity_id",
            Reference(ObjectType::OrderSummary),
            Required,
        ),
        f(
            "TotalAmountWithTax",
            "total_amount_with_tax",
            Money,
            Required,
        ),
        f("Balance", "balance", Money, Optional(None)),
        f(
            "Status",
            "status",
            Picklist(&["Draft", "Pending", "Posted", "Canceled", "Error", "Voided"]),
            Optional(Some("Posted")),
        ),
        CURRENCY,
        CREATED,
        MODIFIED,
    ],
};

static CREDIT_MEMO: ObjectDef = ObjectDef {
    ty: ObjectType::CreditMemo,
    table: "credit_memos",
    fields: &[
        ID,
        f(
            "ReferenceEntityId",
            "reference_entity_id",
            Reference(ObjectType::OrderSummary),
            Required,
        ),
        f(
            "TotalAmountWithTax",
            "total_amount_with_tax",
            Money,
            Required,
        ),
        f("Balance", "balance", Money, Optional(None)),
        f(
            "Status",
            "status",
            Picklist(CREDIT_MEMO_STATUSES),
            Optional(Some("Posted")),
        ),
        CURRENCY,
        CREATED,
        MODIFIED,
    ],
};

static CREDIT_MEMO_INV_APPLICATION: ObjectDef = ObjectDef {
    ty: ObjectType::CreditMemoInvApplication,
    table: "credit_memo_inv_applications",
    fields: &[
        ID,
        f(
            "CreditMemoId",
            "credit_memo_id",
            Reference(ObjectType::CreditMemo),
            No,
        ),
        f(
            "InvoiceId",
            "invoice_id",
            Reference(ObjectType::Invoice),
            No,
        ),
        f("Amount", "amount", Money, No),
        f("Type", "type", Text, No),
        f("AppliedDate", "applied_date", DateTime, No),
        CURRENCY,
        CREATED,
        MODIFIED,
    ],
};

static BACKGROUND_OPERATION: ObjectDef = ObjectDef {
    ty: ObjectType::BackgroundOperation,
    table: "background_operations",
    fields: &[
        ID,
        f("Name", "name", Text, No),
        f("Type", "type", Text, No),
        f("Status", "status", Text, No),
        f("ParentKey", "parent_key", Text, No),
        f("SubmittedAt", "submitted_at", DateTime, No),
        f("StartedAt", "started_at", DateTime, No),
        f("FinishedAt", "finished_at", DateTime, No),
        f("Error", "error", Text, No),
        f("RetryCount", "retry_count", Int, No),
        f("RetryLimit", "retry_limit", Int, No),
        f("RetryBackoff", "retry_backoff", Int, No),
        f("ProcessAfter", "process_after", DateTime, No),
        f("Timeout", "timeout", Int, No),
        f("WorkerUri", "worker_uri", Text, No),
        CREATED,
        MODIFIED,
    ],
};

static REFUND: ObjectDef = ObjectDef {
    ty: ObjectType::Refund,
    table: "refunds",
    fields: &[
        ID,
        f(
            "OrderPaymentSummaryId",
            "order_payment_summary_id",
            Reference(ObjectType::OrderPaymentSummary),
            No,
        ),
        f(
            "PaymentGatewayId",
            "payment_gateway_id",
            Reference(ObjectType::PaymentGateway),
            No,
        ),
        f("Amount", "amount", Money, No),
        f("Status", "status", Text, No),
        f("Type", "type", Text, No),
        f("ProcessingMode", "processing_mode", Text, No),
        f("SfResultCode", "sf_result_code", Text, No),
        f("GatewayRefNumber", "gateway_ref_number", Text, No),
        f("GatewayResultCode", "gateway_result_code", Text, No),
        f(
            "GatewayResultCodeDescription",
            "gateway_result_code_description",
            Text,
            No,
        ),
        f("GatewayDate", "gateway_date", DateTime, No),
        f("ClientContext", "client_context", Text, No),
        CURRENCY,
        CREATED,
        MODIFIED,
    ],
};

static REFUND_LINE_PAYMENT: ObjectDef = ObjectDef {
    ty: ObjectType::RefundLinePayment,
    table: "refund_line_payments",
    fields: &[
        ID,
        f("RefundId", "refund_id", Reference(ObjectType::Refund), No),
        f(
            "PaymentId",
            "payment_id",
            Reference(ObjectType::Payment),
            No,
        ),
        f("Amount", "amount", Money, No),
        f("Type", "type", Text, No),
        f("AppliedDate", "applied_date", DateTime, No),
        CURRENCY,
        CREATED,
        MODIFIED,
    ],
};

static PAYMENT_GATEWAY_LOG: ObjectDef = ObjectDef {
    ty: ObjectType::PaymentGatewayLog,
    table: "payment_gateway_logs",
    fields: &[
        ID,
        f("InteractionType", "interaction_type", Text, No),
        f("InteractionStatus", "interaction_status", Text, No),
        f("SfResultCode", "sf_result_code", Text, No),
        f("GatewayResultCode", "gateway_result_code", Text, No),
        f("GatewayMessage", "gateway_message", Text, No),
        f("GatewayRefNumber", "gateway_ref_number", Text, No),
        f("GatewayDate", "gateway_date", DateTime, No),
        f("SfRefNumber", "sf_ref_number", Text, No),
        f("Request", "request", Text, No),
        f("Response", "response", Text, No),
        f(
            "ReferencedEntityId",
            "referenced_entity_id",
            Reference(ObjectType::Refund),
            No,
        ),
        f(
            "OrderPaymentSummaryId",
            "order_payment_summary_id",
            Reference(ObjectType::OrderPaymentSummary),
            No,
        ),
        f(
            "PaymentGatewayId",
            "payment_gateway_id",
            Reference(ObjectType::PaymentGateway),
            No,
        ),
        f("IsNotification", "is_notification", Text, No),
        f("DurationMs", "duration_ms", Int, No),
        CURRENCY,
        CREATED,
        MODIFIED,
    ],
};

static PROCESS_EXCEPTION: ObjectDef = ObjectDef {
    ty: ObjectType::ProcessException,
    table: "process_exceptions",
    fields: &[
        ID,
        f("Category", "category", Text, No),
        f("ExceptionType", "exception_type", Text, No),
        f("Status", "status", Picklist(PROCESS_EXCEPTION_STATUSES), No),
        f("Severity", "severity", Text, No),
        f("Priority", "priority", Text, No),
        f("Message", "message", Text, No),
        f("Description", "description", Text, No),
        f("AttachedToId", "attached_to_id", Text, No),
        f(
            "OrderSummaryId",
            "order_summary_id",
            Reference(ObjectType::OrderSummary),
            No,
        ),
        f(
            "BackgroundOperationId",
            "background_operation_id",
            Reference(ObjectType::BackgroundOperation),
            No,
        ),
        CREATED,
        MODIFIED,
    ],
};

/// The definition of an object type.
pub fn object_def(ty: ObjectType) -> &'static ObjectDef {
    match ty {
        ObjectType::OrderSummary => &ORDER_SUMMARY,
        ObjectType::OrderPaymentSummary => &ORDER_PAYMENT_SUMMARY,
        ObjectType::PaymentGateway => &PAYMENT_GATEWAY,
        ObjectType::Payment => &PAYMENT,
        ObjectType::Invoice => &INVOICE,
        ObjectType::CreditMemo => &CREDIT_MEMO,
        ObjectType::CreditMemoInvApplication => &CREDIT_MEMO_INV_APPLICATION,
        ObjectType::BackgroundOperation => &BACKGROUND_OPERATION,
        ObjectType::Refund => &REFUND,
        ObjectType::RefundLinePayment => &REFUND_LINE_PAYMENT,
        ObjectType::PaymentGatewayLog => &PAYMENT_GATEWAY_LOG,
        ObjectType::ProcessException => &PROCESS_EXCEPTION,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_object_has_an_id_and_unique_field_names() {
        for ty in ObjectType::ALL {
            let def = object_def(ty);
            assert_eq!(def.ty, ty);
            assert_eq!(def.fields[0].name, "Id");
            let mut names: Vec<_> = def
                .fields
                .iter()
                .map(|f| f.name.to_ascii_lowercase())
                .collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), def.fields.len(), "{ty}");
        }
    }
}

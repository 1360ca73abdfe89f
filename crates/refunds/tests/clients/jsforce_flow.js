// jsforce 3 drives the whole flow against a running `refunds serve`, unchanged: password
// login, record creation, ensure-refunds-async, polling the BackgroundOperation, SOQL
// (with autoFetch following nextRecordsUrl), and Salesforce errors.
//
// Reads REFUNDS_URL, REFUNDS_CLIENT_ID, REFUNDS_CLIENT_SECRET, REFUNDS_USERNAME and
// REFUNDS_PASSWORD (a standard user, who loads the order and ensures the refund), and
// REFUNDS_ADMIN_CLIENT_ID / REFUNDS_ADMIN_CLIENT_SECRET (an administrative client: only
// admins create payment gateways); prints one JSON line with what it saw, which the Rust
// test checks against the service. Any failed expectation exits non-zero.
"use strict";

const assert = require("node:assert/strict");
const jsforce = require("jsforce");

const env = (name) => {
  const value = process.env[name];
  assert.ok(value, `${name} is not set`);
  return value;
};
const url = env("REFUNDS_URL");
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  const conn = new jsforce.Connection({
    loginUrl: url,
    version: "58.0",
    oauth2: { loginUrl: url, clientId: env("REFUNDS_CLIENT_ID"), clientSecret: env("REFUNDS_CLIENT_SECRET") },
  });
  const identity = await conn.login(env("REFUNDS_USERNAME"), env("REFUNDS_PASSWORD"));
  assert.match(identity.organizationId, /^00D/);
  assert.match(identity.id, /^005/);
  assert.equal(conn.instanceUrl, url);

  const created = async (type, record) => {
    const result = await conn.sobject(type).create(record);
    assert.equal(result.success, true, JSON.stringify(result));
    return result.id;
  };
  const post = (path, body) =>
    conn.request({
      method: "POST",
      url: `/services/data/v58.0${path}`,
      body: JSON.stringify(body),
      headers: { "Content-Type": "application/json" },
    });

  let forbidden;
  const gatewayRecord = { PaymentGatewayName: "Sim", ProviderType: "Simulator" };
  try {
    await conn.sobject("PaymentGateway").create(gatewayRecord);
    assert.fail("a standard user created a payment gateway");
  } catch (e) {
    assert.equal(e.errorCode, "INSUFFICIENT_ACCESS_OR_READONLY", String(e));
    forbidden = e.errorCode;
  }
  // The administrative client logs in with the client-credentials grant and hands its
  // token to a second connection.
  const grant = await fetch(`${url}/services/oauth2/token`, {
    method: "POST",
    body: new URLSearchParams({
      grant_type: "client_credentials",
      client_id: env("REFUNDS_ADMIN_CLIENT_ID"),
      client_secret: env("REFUNDS_ADMIN_CLIENT_SECRET"),
    }),
  });
  assert.equal(grant.status, 200, await grant.clone().text());
  const adminToken = await grant.json();
  const admin = new jsforce.Connection({
    instanceUrl: adminToken.instance_url,
    accessToken: adminToken.access_token,
    version: "58.0",
  });
  const gatewayResult = await admin.sobject("PaymentGateway").create(gatewayRecord);
  assert.equal(gatewayResult.success, true, JSON.stringify(gatewayResult));
  const gateway = gatewayResult.id;

  const order = await created("OrderSummary", { OrderNumber: "JS-1" });
  const payment = await created("Payment", {
    PaymentGatewayId: gateway,
    Amount: 120.0,
    GatewayRefNumber: "ch_js_1",
  });
  const summary = await post("/commerce/order-management/order-payment-summaries", {
    orderSummaryId: order,
    paymentIds: [payment],
  });
  const paymentSummary = summary.orderPaymentSummaryId;
  const memo = await created("CreditMemo", { ReferenceEntityId: order, TotalAmountWithTax: 45.5 });

  const accepted = await post(
    `/commerce/order-management/order-summaries/${order}/async-actions/ensure-refunds-async`,
    { creditMemoId: memo }
  );
  assert.equal(accepted.success, true, JSON.stringify(accepted));
  const operation = accepted.backgroundOperationId;

  let status;
  for (let i = 0; i < 400; i++) {
    const bo = await conn.sobject("BackgroundOperation").retrieve(operation);
    assert.equal(bo.attributes.type, "BackgroundOperation");
    status = bo.Status;
    if (status === "Complete" || status === "Error") break;
    await sleep(50);
  }
  assert.equal(status, "Complete");

  const refunds = await conn.query(
    `SELECT Id, Status, Amount FROM Refund WHERE OrderPaymentSummaryId = '${paymentSummary}'`
  );
  assert.equal(refunds.totalSize, 1);
  assert.equal(refunds.records[0].Status, "Processed");
  const logs = await conn.query(
    "SELECT Id, InteractionStatus, OrderPaymentSummary.OrderSummaryId FROM PaymentGatewayLog " +
      `WHERE OrderPaymentSummary.OrderSummaryId = '${order}'`
  );
  assert.equal(logs.totalSize, 1);
  assert.equal(logs.records[0].OrderPaymentSummary.OrderSummaryId, order);

  // More records than one batch: autoFetch follows nextRecordsUrl to the end.
  const bulk = [];
  for (let i = 0; i < 205; i++) bulk.push(created("OrderSummary", { OrderNumber: `JS-BULK-${i}` }));
  await Promise.all(bulk);
  const every = await conn.query("SELECT Id, OrderNumber FROM OrderSummary ORDER BY OrderNumber", {
    autoFetch: true,
    maxFetch: 10000,
    headers: { "Sforce-Query-Options": "batchSize=200" },
  });
  assert.equal(every.totalSize, 206);
  assert.equal(every.records.length, 206);
  assert.equal(new Set(every.records.map((r) => r.Id)).size, 206);

  // Salesforce errors arrive as jsforce errors carrying the errorCode.
  const refused = await conn
    .sobject("OrderSummary")
    .create({ Nope: 1 })
    .then(() => null, (error) => error);
  assert.ok(refused, "an unknown field is refused");
  assert.equal(refused.errorCode, "INVALID_FIELD");
  const bogus = new jsforce.Connection({ instanceUrl: url, accessToken: "not-a-token", version: "58.0" });
  const unauthenticated = await bogus.query("SELECT Id FROM Refund").then(() => null, (error) => error);
  assert.ok(unauthenticated, "a bad token is refused");
  assert.equal(unauthenticated.errorCode, "INVALID_SESSION_ID");

  console.log(
    JSON.stringify({
      order,
      operation,
      refund: refunds.records[0].Id,
      amount: refunds.records[0].Amount,
      bulk: every.records.length,
      errors: [forbidden, refused.errorCode, unauthenticated.errorCode],
    })
  );
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});

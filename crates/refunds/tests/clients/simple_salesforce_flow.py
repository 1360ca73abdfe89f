"""simple-salesforce 1.12 drives the whole flow against `refunds serve --tls-cert …`, unchanged.

simple-salesforce only speaks https and its username/password login is hard-wired to
salesforce.com hosts, so the session comes from our token endpoint (the password grant, as
any OAuth client would fetch it) and is handed over as `session_id`, which the library
documents for exactly that.

Reads REFUNDS_URL (https), REFUNDS_CA (the server's certificate), REFUNDS_CLIENT_ID,
REFUNDS_CLIENT_SECRET, REFUNDS_USERNAME and REFUNDS_PASSWORD (a standard user, who loads the
order and ensures the refund), and REFUNDS_ADMIN_CLIENT_ID / REFUNDS_ADMIN_CLIENT_SECRET (an
administrative client: only admins create payment gateways); prints one JSON line with what
it saw, which the Rust test checks against the service. A failed expectation exits non-zero.
"""

import json
import os
import time

import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
)


def env(name):
    value = os.environ.get(name)
    assert value, f"{name} is not set"
    return value


def main():
    url = env("REFUNDS_URL")
    session = requests.Session()
    # Trust exactly the test server's certificate (REQUESTS_CA_BUNDLE in the environment
    # would otherwise win over `verify`).
    session.trust_env = False
    session.verify = env("REFUNDS_CA")

    token = session.post(
        f"{url}/services/oauth2/token",
        data={
            "grant_type": "password",
            "client_id": env("REFUNDS_CLIENT_ID"),
            "client_secret": env("REFUNDS_CLIENT_SECRET"),
            "username": env("REFUNDS_USERNAME"),
            "password": env("REFUNDS_PASSWORD"),
        },
    )
    assert token.status_code == 200, token.text
    token = token.json()
    assert token["instance_url"] == url, token

    sf = Salesforce(
        instance_url=token["instance_url"],
        session_id=token["access_token"],
        version="58.0",
        session=session,
    )

    def created(kind, record):
        result = getattr(sf, kind).create(record)
        assert result["success"] is True, result
        return result["id"]

    gateway_record = {"PaymentGatewayName": "Sim", "ProviderType": "Simulator"}
    try:
        sf.PaymentGateway.create(gateway_record)
        raise AssertionError("a standard user created a payment gateway")
    except SalesforceRefusedRequest as error:
        forbidden = error.content[0]["errorCode"]
    assert forbidden == "INSUFFICIENT_ACCESS_OR_READONLY", forbidden
    # The administrative client logs in with the client-credentials grant.
    admin_token = session.post(
        f"{url}/services/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": env("REFUNDS_ADMIN_CLIENT_ID"),
            "client_secret": env("REFUNDS_ADMIN_CLIENT_SECRET"),
        },
    )
    assert admin_token.status_code == 200, admin_token.text
    admin = Salesforce(
        instance_url=url,
        session_id=admin_token.json()["access_token"],
        version="58.0",
        session=session,
    )
    result = admin.PaymentGateway.create(gateway_record)
    assert result["success"] is True, result
    gateway = result["id"]

    order = created("OrderSummary", {"OrderNumber": "PY-1"})
    payment = created(
        "Payment",
        {"PaymentGatewayId": gateway, "Amount": 60.0, "GatewayRefNumber": "ch_py_1"},
    )
    summary = sf.restful(
        "commerce/order-management/order-payment-summaries",
        method="POST",
        json={"orderSummaryId": order, "paymentIds": [payment]},
    )
    payment_summary = summary["orderPaymentSummaryId"]

    accepted = sf.restful(
        f"commerce/order-management/order-summaries/{order}/async-actions/ensure-refunds-async",
        method="POST",
        json={"excessFundsAmount": 12.34},
    )
    assert accepted["success"] is True, accepted
    operation = accepted["backgroundOperationId"]

    status = None
    for _ in range(400):
        bo = sf.BackgroundOperation.get(operation)
        assert bo["attributes"]["type"] == "BackgroundOperation", bo
        status = bo["Status"]
        if status in ("Complete", "Error"):
            break
        time.sleep(0.05)
    assert status == "Complete", status

    refunds = sf.query(
        "SELECT Id, Status, Amount FROM Refund "
        f"WHERE OrderPaymentSummaryId = '{payment_summary}'"
    )
    assert refunds["totalSize"] == 1, refunds
    assert refunds["records"][0]["Status"] == "Processed", refunds
    logs = sf.query(
        "SELECT Id, InteractionStatus FROM PaymentGatewayLog "
        f"WHERE OrderPaymentSummary.OrderSummaryId = '{order}'"
    )
    assert logs["totalSize"] == 1, logs
    assert logs["records"][0]["InteractionStatus"] == "Success", logs

    # query_all follows nextRecordsUrl; the batch size header makes batches of 200.
    for n in range(204):
        created("OrderSummary", {"OrderNumber": f"PY-BULK-{n}"})
    sf.headers["Sforce-Query-Options"] = "batchSize=200"
    every = sf.query_all("SELECT Id FROM OrderSummary")
    del sf.headers["Sforce-Query-Options"]
    assert every["totalSize"] == 205, every["totalSize"]
    assert len({r["Id"] for r in every["records"]}) == 205

    # Salesforce errors become simple-salesforce's exceptions, with the error body.
    try:
        sf.OrderSummary.create({"Nope": 1})
        raise AssertionError("an unknown field was accepted")
    except SalesforceMalformedRequest as error:
        refused = error.content[0]["errorCode"]
    assert refused == "INVALID_FIELD", refused
    bogus = Salesforce(
        instance_url=url, session_id="not-a-token", version="58.0", session=session
    )
    try:
        bogus.query("SELECT Id FROM Refund")
        raise AssertionError("a bad token was accepted")
    except SalesforceExpiredSession as error:
        expired = error.content[0]["errorCode"]
    assert expired == "INVALID_SESSION_ID", expired

    print(
        json.dumps(
            {
                "order": order,
                "operation": operation,
                "refund": refunds["records"][0]["Id"],
                "amount": refunds["records"][0]["Amount"],
                "bulk": len(every["records"]),
                "errors": [forbidden, refused, expired],
            }
        )
    )


if __name__ == "__main__":
    main()

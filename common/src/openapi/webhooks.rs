//! The webhook endpoints of the document: subscriptions, their deliveries and
//! replay, the clinic's events, and what a delivery looks like.

use super::{common_errors, problem_response, query_param};
use crate::resource::WEBHOOK_EVENT_TYPES;
use serde_json::{json, Map, Value};

/// The webhook paths and schemas.
pub(super) fn paths(paths: &mut Map<String, Value>, schemas: &mut Map<String, Value>) {
    let event_type = json!({"type": "string", "enum": WEBHOOK_EVENT_TYPES});
    let role = json!({"type": "string", "enum": ["admin", "practitioner", "staff"]});
    let time = json!({"type": ["string", "null"], "format": "date-time"});
    schemas.insert(
        "WebhookSubscription".into(),
        json!({
            "type": "object",
            "properties": {
                "id": {"type": "string", "format": "uuid", "description": "The subscription's id: the `user_id` of the reads its deliveries make, in the audit trail."},
                "url": {"type": "string", "format": "uri"},
                "description": {"type": ["string", "null"]},
                "event_types": {"type": "array", "items": event_type.clone()},
                "role": role.clone(),
                "enabled": {"type": "boolean", "description": "`false` once disabled, by an admin or after failing longer than `WEBHOOK_DISABLE_AFTER_SECS`; new events are then not recorded for it."},
                "disabled_at": time.clone(),
                "disabled_reason": {"type": ["string", "null"], "description": "Why it was disabled, and what to do."},
                "failing_since": time.clone(),
                "last_error": {"type": ["string", "null"], "description": "The last failed delivery's error (a status, a timeout, a refused connection)."},
                "last_success_at": time.clone(),
                "created_at": {"type": "string", "format": "date-time"},
                "updated_at": {"type": "string", "format": "date-time"},
                "pending_deliveries": {"type": "integer", "minimum": 0}
            },
            "required": ["id", "url", "description", "event_types", "role", "enabled", "disabled_at", "disabled_reason", "failing_since", "last_error", "last_success_at", "created_at", "updated_at", "pending_deliveries"]
        }),
    );
    schemas.insert(
        "NewWebhookSubscription".into(),
        json!({
            "type": "object",
            "properties": {
                "url": {"type": "string", "format": "uri", "maxLength": 2000, "description": "An `https` URL on a public address, without credentials."},
                "event_types": {"type": "array", "items": event_type.clone(), "minItems": 1},
                "role": {"type": "string", "enum": ["admin", "practitioner", "staff"], "default": "staff", "description": "Whose view of the data deliveries carry: staff's leaves out restricted fields (`ssn`, appointment notes)."},
                "description": {"type": "string", "maxLength": 500}
            },
            "required": ["url", "event_types"],
            "additionalProperties": false
        }),
    );
    schemas.insert(
        "WebhookSubscriptionChange".into(),
        json!({
            "type": "object",
            "properties": {
                "url": {"type": "string", "format": "uri", "maxLength": 2000},
                "event_types": {"type": "array", "items": event_type.clone(), "minItems": 1},
                "description": {"type": "string", "maxLength": 500},
                "enabled": {"type": "boolean", "description": "`true` resumes a disabled subscription at its first undelivered event and makes the caller its owner; `false` pauses it. A subscription delivers only while its owner (its maker, or whoever last enabled it or changed its `url`) is an active admin of the clinic; otherwise it is disabled at its next delivery, the reason on it."}
            },
            "additionalProperties": false
        }),
    );
    schemas.insert(
        "WebhookSubscriptionCreated".into(),
        json!({"allOf": [
            {"$ref": "#/components/schemas/WebhookSubscription"},
            {"type": "object", "properties": {"secret": {"type": "string", "pattern": "^whsec_", "description": "The signing secret (Standard Webhooks form), shown this once."}}, "required": ["secret"]}
        ]}),
    );
    let page = |item: &str| {
        json!({
            "type": "object",
            "properties": {
                "data": {"type": "array", "items": {"$ref": format!("#/components/schemas/{item}")}},
                "next_cursor": {"type": ["string", "null"], "description": "The `seq` to send as `after` for the next page; `null` on the last."}
            },
            "required": ["data", "next_cursor"]
        })
    };
    schemas.insert(
        "WebhookSubscriptionPage".into(),
        page("WebhookSubscription"),
    );
    schemas.insert(
        "WebhookEvent".into(),
        json!({
            "type": "object",
            "properties": {
                "seq": {"type": "integer", "minimum": 1, "description": "The event's place in the clinic's order: the replay cursor."},
                "id": {"type": "string", "format": "uuid", "description": "The `webhook-id` of its deliveries."},
                "type": event_type.clone(),
                "resource": {"type": "string"},
                "resource_id": {"type": "string", "format": "uuid"},
                "occurred_at": {"type": "string", "format": "date-time"}
            },
            "required": ["seq", "id", "type", "resource", "resource_id", "occurred_at"]
        }),
    );
    schemas.insert("WebhookEventPage".into(), page("WebhookEvent"));
    schemas.insert(
        "WebhookDelivery".into(),
        json!({
            "type": "object",
            "properties": {
                "seq": {"type": "integer"},
                "event_id": {"type": "string", "format": "uuid"},
                "type": event_type.clone(),
                "attempts": {"type": "integer", "minimum": 0},
                "last_status": {"type": ["integer", "null"], "description": "The receiver's last HTTP status (`null`: no answer)."},
                "last_error": {"type": ["string", "null"]},
                "next_attempt_at": time.clone(),
                "delivered_at": time
            },
            "required": ["seq", "event_id", "type", "attempts", "last_status", "last_error", "next_attempt_at", "delivered_at"]
        }),
    );
    schemas.insert("WebhookDeliveryPage".into(), page("WebhookDelivery"));
    schemas.insert(
        "WebhookPayload".into(),
        json!({
            "type": "object",
            "description": "The body of a delivery: `POST`ed as JSON with the headers `webhook-id` (the event's id, the same on every retry and replay), `webhook-timestamp` (Unix seconds) and `webhook-signature` (`v1,` and the base64 HMAC-SHA256 of `<id>.<timestamp>.<body>` under the secret), as the Standard Webhooks specification says. A `2xx` within `WEBHOOK_TIMEOUT_SECS` delivers it.",
            "properties": {
                "type": event_type,
                "timestamp": {"type": "string", "format": "date-time", "description": "When the change happened."},
                "data": {
                    "type": "object",
                    "properties": {
                        "seq": {"type": "integer"},
                        "resource": {"type": "string"},
                        "id": {"type": "string", "format": "uuid"},
                        "object": {"type": ["object", "null"], "description": "The row as the subscription's role sees it when the delivery is sent; `null` for an erasure or a row deleted since."}
                    },
                    "required": ["seq", "resource", "id", "object"]
                }
            },
            "required": ["type", "timestamp", "data"]
        }),
    );

    let admins = "Clinic admins only; other roles get `403`.";
    let with_errors = |mut responses: Map<String, Value>, forbidden: &str| {
        common_errors(&mut responses);
        responses.insert("403".into(), problem_response(forbidden));
        Value::Object(responses)
    };
    let ok = |status: &str, description: &str, schema: &str| {
        let mut m = Map::new();
        m.insert(
            status.into(),
            json!({"description": description, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}}),
        );
        m
    };
    let body = |schema: &str| json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    let id_param = json!({"name": "id", "in": "path", "required": true, "description": "The subscription's id.", "schema": {"type": "string", "format": "uuid"}});
    let page_params = || {
        vec![
            {
                let mut p = query_param("after", json!({"type": "integer", "minimum": 0}));
                p["description"] =
                    "Only what comes after this event `seq` (a page's `next_cursor`).".into();
                p
            },
            query_param(
                "limit",
                json!({"type": "integer", "minimum": 1, "maximum": 100, "default": 20}),
            ),
        ]
    };
    let forbidden = "Only a clinic admin can manage webhooks.";

    let mut created = ok(
        "201",
        "The subscription, with its secret (shown this once).",
        "WebhookSubscriptionCreated",
    );
    created.insert("400".into(), problem_response("A body that is not a subscription: an `http` URL, an internal address, credentials in the URL, an unknown event type, an unknown role."));
    created.insert(
        "409".into(),
        problem_response("The clinic has 20 subscriptions already."),
    );
    paths.insert(
        "/api/v1/webhook-subscriptions".into(),
        json!({
            "get": {
                "operationId": "listWebhookSubscriptions",
                "summary": "List webhook subscriptions",
                "tags": ["webhooks"],
                "description": format!("The clinic's subscriptions with their state (failing, disabled and why, deliveries pending); never their secrets. {admins}"),
                "responses": with_errors(ok("200", "The subscriptions.", "WebhookSubscriptionPage"), forbidden)
            },
            "post": {
                "operationId": "createWebhookSubscription",
                "summary": "Subscribe to events",
                "tags": ["webhooks"],
                "description": format!("Deliveries of the events named, from now on, to `url`, signed with a new secret shown in this answer only and stored sealed with the clinic's data key. Events are recorded in the transaction of the change they announce and delivered at least once, in order, retried with backoff (a failing event holds back the later ones); a subscription failing longer than `WEBHOOK_DISABLE_AFTER_SECS` (3 days unless configured) is disabled with the reason on it. Targets must be public `https` URLs. {admins}"),
                "requestBody": body("NewWebhookSubscription"),
                "responses": with_errors(created, forbidden)
            }
        }),
    );
    let not_found = |mut m: Map<String, Value>| {
        m.insert(
            "404".into(),
            problem_response("No such subscription in this clinic."),
        );
        m.entry("400")
            .or_insert_with(|| problem_response("The id in the path is not a UUID."));
        m
    };
    let mut changed = not_found(ok(
        "200",
        "The subscription as changed.",
        "WebhookSubscription",
    ));
    changed.insert(
        "400".into(),
        problem_response("A body that is not a change of a subscription, or an id in the path that is not a UUID."),
    );
    let mut deleted = Map::new();
    deleted.insert(
        "204".into(),
        json!({"description": "Deleted, with its pending deliveries."}),
    );
    paths.insert(
        "/api/v1/webhook-subscriptions/{id}".into(),
        json!({
            "parameters": [id_param.clone()],
            "get": {
                "operationId": "getWebhookSubscription",
                "summary": "Get a webhook subscription",
                "tags": ["webhooks"],
                "description": format!("One subscription and its state. {admins}"),
                "responses": with_errors(not_found(ok("200", "The subscription.", "WebhookSubscription")), forbidden)
            },
            "patch": {
                "operationId": "changeWebhookSubscription",
                "summary": "Change a webhook subscription",
                "tags": ["webhooks"],
                "description": format!("Its `url`, `event_types`, `description`; `enabled: true` resumes a disabled one at its first undelivered event (retried at once), `enabled: false` pauses it. {admins}"),
                "requestBody": body("WebhookSubscriptionChange"),
                "responses": with_errors(changed, forbidden)
            },
            "delete": {
                "operationId": "deleteWebhookSubscription",
                "summary": "Delete a webhook subscription",
                "tags": ["webhooks"],
                "description": format!("No more deliveries; its pending ones are dropped. {admins}"),
                "responses": with_errors(not_found(deleted), forbidden)
            }
        }),
    );
    let mut queued = Map::new();
    queued.insert(
        "202".into(),
        json!({"description": "Queued for delivery again, in order.", "content": {"application/json": {"schema": {
            "type": "object", "properties": {"queued": {"type": "integer", "minimum": 0}}, "required": ["queued"]}}}}),
    );
    queued.insert(
        "400".into(),
        problem_response(
            "`after` is not a whole number of at least 0, or the id in the path is not a UUID.",
        ),
    );
    paths.insert(
        "/api/v1/webhook-subscriptions/{id}/replay".into(),
        json!({
            "parameters": [id_param.clone()],
            "post": {
                "operationId": "replayWebhookEvents",
                "summary": "Replay events",
                "tags": ["webhooks"],
                "description": format!("Delivers again every kept event after `after` (an event's `seq`; 0: from the first kept) that the subscription wants, in order, with their original `webhook-id`s. Events are kept `WEBHOOK_RETENTION_DAYS` (30 unless configured). {admins}"),
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"after": {"type": "integer", "minimum": 0}}, "required": ["after"], "additionalProperties": false}}}},
                "responses": with_errors(not_found(queued), forbidden)
            }
        }),
    );
    let mut listed = not_found(ok(
        "200",
        "A page of deliveries in event order.",
        "WebhookDeliveryPage",
    ));
    listed.insert(
        "400".into(),
        problem_response("An `after` or `limit` out of range, another parameter, or an id in the path that is not a UUID."),
    );
    paths.insert(
        "/api/v1/webhook-subscriptions/{id}/deliveries".into(),
        json!({
            "parameters": [id_param],
            "get": {
                "operationId": "listWebhookDeliveries",
                "summary": "List a subscription's deliveries",
                "tags": ["webhooks"],
                "description": format!("Each delivery of the subscription with its attempts, the receiver's last status and error, and when it was delivered or will be tried again. {admins}"),
                "parameters": page_params(),
                "responses": with_errors(listed, forbidden)
            }
        }),
    );
    let mut events = ok("200", "A page of events in order.", "WebhookEventPage");
    events.insert(
        "400".into(),
        problem_response("An `after` or `limit` out of range, or another parameter."),
    );
    paths.insert(
        "/api/v1/webhook-events".into(),
        json!({
            "get": {
                "operationId": "listWebhookEvents",
                "summary": "List webhook events",
                "tags": ["webhooks"],
                "description": format!("The clinic's recorded events (only those some subscription wanted when they happened), oldest first; their `seq` is the replay cursor. {admins}"),
                "parameters": page_params(),
                "responses": with_errors(events, forbidden)
            }
        }),
    );
}

/// What a receiver gets (the document's `webhooks`): one `POST` per event.
pub(super) fn outgoing() -> Value {
    let header = |name: &str, description: &str| json!({"name": name, "in": "header", "required": true, "description": description, "schema": {"type": "string"}});
    json!({
        "clinic-event": {
            "post": {
                "operationId": "receiveClinicEvent",
                "summary": "A clinic event, delivered",
                "tags": ["webhooks"],
                "description": "Sent to a subscription's `url` for each event it wants, in event order, at least once: verify the signature with the subscription's secret (any Standard Webhooks library does), drop a `webhook-id` already handled, and answer `2xx` within `WEBHOOK_TIMEOUT_SECS`. Anything else is retried with backoff, holding back the later events.",
                "security": [],
                "parameters": [
                    header("webhook-id", "The event's id: the same on every retry and replay."),
                    header("webhook-timestamp", "When this attempt was signed, in Unix seconds."),
                    header("webhook-signature", "`v1,` then the base64 HMAC-SHA256 of `<webhook-id>.<webhook-timestamp>.<body>` under the secret.")
                ],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/WebhookPayload"}}}},
                "responses": {
                    "200": {"description": "Received (any `2xx` is)."}
                }
            }
        }
    })
}

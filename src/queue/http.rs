//! The answers of the async contract.
//!
//! - `202 Accepted` to a queued order: `Preference-Applied: respond-async`,
//!   `Location: /orders/<id>`, a JSON body saying it is queued.
//! - `GET /orders/<id>` (same `Authorization` as the order): while queued,
//!   `202` with its place (position, attempts, last error); once the
//!   factory answered, *its* answer (status, content type, body: 200 and
//!   the pizza JWT, or its final refusal, a 4xx), with
//!   `x-sidecar-order-state`; a dead letter whose last replay got a factory
//!   answer gives that answer. Unknown ids, expired orders and another
//!   `Authorization` are all the same 404 ([`OrderNotFound`]): ids cannot
//!   be probed. The errors become JSON in `error.rs`, like every other.

use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};

use super::Queue;
use super::error::{OrderGivenUp, OrderNotFound, QueueUnavailable};
use super::prefer::PREFERENCE_APPLIED;
use super::record::{AuthHash, OrderId, OrderRecord, OrderState};
use crate::boxed::BoxError;
use crate::proxy::body::ProxyBody;
use crate::times::{now_ms, rfc3339_ms};

/// Header naming a stored order's state on `GET /orders/<id>` answers.
pub const X_ORDER_STATE: &str = "x-sidecar-order-state";

/// Where an async order can be read: `Location: /orders/<id>` on the proxy listener.
pub const ORDERS_PREFIX: &str = "/orders/";

fn json(status: StatusCode, body: &serde_json::Value) -> Response<ProxyBody> {
    let mut res = Response::new(ProxyBody::full(
        serde_json::to_vec(body).unwrap_or_default(),
    ));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn location(id: OrderId) -> HeaderValue {
    HeaderValue::from_str(&format!("{ORDERS_PREFIX}{id}"))
        .unwrap_or_else(|_| HeaderValue::from_static("/orders/"))
}

/// The `202` for an order just queued (durable by now).
pub fn accepted(record: &OrderRecord) -> Response<ProxyBody> {
    let mut res = json(
        StatusCode::ACCEPTED,
        &serde_json::json!({
            "message": "The pizza factory cannot take the order right now. It is queued and will be sent as soon as the factory is back.",
            "id": record.id,
            "state": OrderState::Queued.as_str(),
            "reason": record.because,
            "location": format!("{ORDERS_PREFIX}{}", record.id),
            "enqueuedAt": rfc3339_ms(record.enqueued_ms),
        }),
    );
    let h = res.headers_mut();
    h.insert(header::LOCATION, location(record.id));
    h.insert(
        PREFERENCE_APPLIED,
        HeaderValue::from_static("respond-async"),
    );
    h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    h.insert(X_ORDER_STATE, HeaderValue::from_static("queued"));
    res
}

/// `GET /orders/<id>` for a caller with `headers`.
pub async fn order_answer(
    queue: &Queue,
    id: &str,
    headers: &HeaderMap,
) -> Result<Response<ProxyBody>, BoxError> {
    let Some(id) = OrderId::parse(id) else {
        return Err(Box::new(OrderNotFound));
    };
    let found = queue
        .lookup(id)
        .await
        .map_err(|e| Box::new(QueueUnavailable(e)) as BoxError)?;
    let Some(found) = found else {
        return Err(Box::new(OrderNotFound));
    };
    let record = found.record;
    // Someone else's order looks exactly like no order.
    if !record.auth.matches(&AuthHash::of(headers)) || record.expires_ms <= now_ms() {
        return Err(Box::new(OrderNotFound));
    }
    if let Some(answer) = &record.answer {
        let mut res = Response::new(ProxyBody::full(answer.body.clone()));
        *res.status_mut() = answer.status();
        for super::record::StoredHeader(name, value) in &answer.headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value),
            ) {
                res.headers_mut().append(n, v);
            }
        }
        res.headers_mut().insert(
            X_ORDER_STATE,
            HeaderValue::from_static(record.state.as_str()),
        );
        return Ok(res);
    }
    if record.state == OrderState::DeadLetter {
        return Err(Box::new(OrderGivenUp {
            attempts: record.attempts,
            last_error: record.last_error.unwrap_or_default(),
        }));
    }
    let mut res = json(
        StatusCode::ACCEPTED,
        &serde_json::json!({
            "message": "The order is queued; it will be sent as soon as the pizza factory is back.",
            "id": record.id,
            "state": record.state.as_str(),
            "reason": record.because,
            "position": found.position,
            "attempts": record.attempts,
            "lastError": record.last_error,
            "enqueuedAt": rfc3339_ms(record.enqueued_ms),
            "nextAttemptAt": rfc3339_ms(record.next_ms),
            "expiresAt": rfc3339_ms(record.expires_ms),
        }),
    );
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    res.headers_mut()
        .insert(X_ORDER_STATE, HeaderValue::from_static("queued"));
    res.headers_mut()
        .insert(header::LOCATION, location(record.id));
    Ok(res)
}

//! The client side of the WebSocket protocol: what a client may send, as a typed message.
//! Anything that is not one of these gets an `error` message naming what was wrong.

use domain::{Channel, Event};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

/// A message from the client, told apart by its `type`. Only a message whose `type` is one of
/// these becomes one; [`Incoming::read`] says what else a frame was.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ClientMessage {
    /// Credentials, for a connection opened without them.
    Auth {
        #[serde(default, deserialize_with = "text_or_nothing")]
        token: Option<String>,
    },
    /// Adds channels, replaces the filters when given, and replays from `since` when given.
    Subscribe {
        #[serde(default)]
        subscriptions: Value,
        #[serde(default)]
        filters: Option<Value>,
        #[serde(default)]
        since: Option<Value>,
    },
    /// Removes channels.
    Unsubscribe {
        #[serde(default)]
        subscriptions: Value,
    },
    Ping,
}

/// A token that is not text is no token.
fn text_or_nothing<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Value::deserialize(d)?.as_str().map(str::to_owned))
}

/// What a text frame turned out to be.
#[derive(Debug)]
pub(super) enum Incoming {
    Message(ClientMessage),
    /// JSON with a `type` that is not a message of the protocol (named, or empty when absent).
    Unknown(String),
    NotJson,
}

impl Incoming {
    pub(super) fn read(text: &str) -> Self {
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            return Incoming::NotJson;
        };
        let kind = value["type"].as_str().unwrap_or_default().to_owned();
        match serde_json::from_value(value) {
            Ok(message) => Incoming::Message(message),
            Err(_) => Incoming::Unknown(kind),
        }
    }
}

/// A subscribe message, checked.
#[derive(Debug)]
pub(super) struct Subscription {
    pub channels: Vec<Channel>,
    pub filters: Option<Filters>,
    pub since: Option<i64>,
}

impl Subscription {
    pub(super) fn parse(
        subscriptions: &Value,
        filters: Option<&Value>,
        since: Option<&Value>,
    ) -> Result<Self, String> {
        let channels = channels(subscriptions)?;
        let filters = match filters {
            None | Some(Value::Null) => None,
            Some(value) => Some(Filters::parse(value)?),
        };
        let since = match since {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_i64()
                    .filter(|n| *n >= 0)
                    .ok_or("since must be a sequence number (0 or more)")?,
            ),
        };
        Ok(Self {
            channels,
            filters,
            since,
        })
    }
}

/// The channels a (un)subscribe message names.
pub(super) fn channels(subscriptions: &Value) -> Result<Vec<Channel>, String> {
    let Some(list) = subscriptions.as_array() else {
        return Err("subscriptions must be a list of channel names".into());
    };
    if list.len() > Channel::ALL.len() {
        return Err(format!("at most {} subscriptions", Channel::ALL.len()));
    }
    let mut unknown = Vec::new();
    let mut channels = Vec::new();
    for item in list {
        match item.as_str().map(str::parse::<Channel>) {
            Some(Ok(c)) => channels.push(c),
            _ => unknown.push(item.to_string()),
        }
    }
    if unknown.is_empty() {
        Ok(channels)
    } else {
        let known: Vec<&str> = Channel::ALL.iter().map(|c| c.as_str()).collect();
        Err(format!(
            "unknown channel(s) {}; known: {}",
            unknown.join(", "),
            known.join(", ")
        ))
    }
}

/// Narrowing of a subscription.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Filters {
    agent_id: Option<Uuid>,
    task_id: Option<Uuid>,
    execution_id: Option<String>,
}

impl Filters {
    fn parse(value: &Value) -> Result<Self, String> {
        let Value::Object(map) = value else {
            return Err("filters must be an object".into());
        };
        let mut filters = Filters::default();
        for (key, v) in map {
            let text = v
                .as_str()
                .ok_or_else(|| format!("filters.{key} must be a string"))?;
            match key.as_str() {
                "agent_id" => {
                    filters.agent_id = Some(
                        text.parse()
                            .map_err(|_| "filters.agent_id must be a UUID")?,
                    )
                }
                "task_id" => {
                    filters.task_id =
                        Some(text.parse().map_err(|_| "filters.task_id must be a UUID")?)
                }
                "execution_id" if text.len() > 200 => {
                    return Err("filters.execution_id must be at most 200 characters".into())
                }
                "execution_id" => filters.execution_id = Some(text.into()),
                other => return Err(format!("unknown filter '{other}'")),
            }
        }
        Ok(filters)
    }

    /// Whether an event passes these filters.
    pub(super) fn admit(&self, event: &Event) -> bool {
        self.agent_id
            .is_none_or(|a| event.agent_id.is_some_and(|e| e.as_uuid() == a))
            && self
                .task_id
                .is_none_or(|t| event.task_id.is_some_and(|e| e.as_uuid() == t))
            && self
                .execution_id
                .as_ref()
                .is_none_or(|x| event.data["execution_id"].as_str() == Some(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_say_what_is_wrong_with_them() {
        let refused = |filters: Value| Filters::parse(&filters).unwrap_err();
        assert_eq!(
            refused(serde_json::json!({"execution_id": "x".repeat(201)})),
            "filters.execution_id must be at most 200 characters"
        );
        assert_eq!(
            refused(serde_json::json!({"agent_id": "nope"})),
            "filters.agent_id must be a UUID"
        );
        assert_eq!(
            refused(serde_json::json!({"color": "red"})),
            "unknown filter 'color'"
        );
        assert_eq!(
            refused(serde_json::json!({"task_id": 5})),
            "filters.task_id must be a string"
        );
        let kept = Filters::parse(&serde_json::json!({"execution_id": "x".repeat(200)}));
        assert_eq!(kept.unwrap().execution_id.map(|x| x.len()), Some(200));
    }

    #[test]
    fn messages_are_told_apart_by_type_and_checked() {
        assert!(matches!(
            Incoming::read(r#"{"type": "ping"}"#),
            Incoming::Message(ClientMessage::Ping)
        ));
        assert!(matches!(
            Incoming::read(r#"{"type": "auth", "token": "k"}"#),
            Incoming::Message(ClientMessage::Auth { token: Some(_) })
        ));
        assert!(matches!(
            Incoming::read(r#"{"type": "auth", "token": 5}"#),
            Incoming::Message(ClientMessage::Auth { token: None })
        ));
        assert!(matches!(Incoming::read("not json"), Incoming::NotJson));
        assert!(matches!(Incoming::read("[1]"), Incoming::Unknown(k) if k.is_empty()));
        assert!(
            matches!(Incoming::read(r#"{"type": "dance"}"#), Incoming::Unknown(k) if k == "dance")
        );
        let sub = Subscription::parse(
            &serde_json::json!(["agent_activity"]),
            Some(&serde_json::json!({"agent_id": "6f1d1d6e-52f5-4b1e-9b1a-1f2b3c4d5e6f"})),
            Some(&serde_json::json!(7)),
        )
        .unwrap();
        assert_eq!(sub.channels, [Channel::AgentActivity]);
        assert_eq!(sub.since, Some(7));
        let err = Subscription::parse(&serde_json::json!(["x"]), None, None).unwrap_err();
        assert!(err.starts_with("unknown channel(s)"), "{err}");
        let err = Subscription::parse(&serde_json::json!([]), None, Some(&serde_json::json!(-1)))
            .unwrap_err();
        assert_eq!(err, "since must be a sequence number (0 or more)");
    }
}

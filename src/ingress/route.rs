//! `[celery.tasks]`: which job kind a Celery task name runs, and how a
//! call's arguments become the kind's payload, the way Python binds them to
//! the `@shared_task` function's parameters: positional arguments in the
//! kind's schema order (or the entry's `args`), keyword arguments by name,
//! `defaults` for what the call left out.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::config::{CelerySettings, CeleryTask, ConfigError};
use crate::jobs::catalog;

/// One task name's mapping, checked against its kind.
#[derive(Debug, Clone)]
pub struct Route {
    pub kind: &'static str,
    /// The payload fields positional arguments fill, in order.
    positional: Vec<String>,
    /// Every field of the kind's payload.
    fields: Vec<String>,
    defaults: Map<String, Value>,
}

/// Every configured task name's route.
#[derive(Debug, Clone, Default)]
pub struct Routes(BTreeMap<String, Route>);

/// A call whose arguments do not fit the task (Python's `TypeError`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{task}() {reason}")]
pub struct ArgumentError {
    pub task: String,
    pub reason: String,
}

impl Routes {
    /// Checks each entry: a known kind, and `args` and `defaults` naming
    /// fields of its payload.
    pub fn new(settings: &CelerySettings) -> Result<Routes, ConfigError> {
        let mut routes = BTreeMap::new();
        for (name, entry) in &settings.tasks {
            routes.insert(name.clone(), Route::new(name, entry)?);
        }
        Ok(Routes(routes))
    }

    pub fn get(&self, task: &str) -> Option<&Route> {
        self.0.get(task)
    }
}

/// The payload fields of `kind` in its schema's order.
fn fields_of(kind: &str) -> Option<Vec<String>> {
    let entry = catalog::entries().into_iter().find(|e| e.kind == kind)?;
    let properties = entry.schema.get("properties")?.as_object()?;
    Some(properties.keys().cloned().collect())
}

impl Route {
    fn new(name: &str, entry: &CeleryTask) -> Result<Route, ConfigError> {
        let key = |part: &str| format!("celery.tasks.\"{name}\"{part}");
        let kind = crate::jobs::KINDS
            .iter()
            .copied()
            .find(|k| *k == entry.kind)
            .ok_or_else(|| {
                let reason = format!(
                    "unknown job kind {:?}; known kinds: {}",
                    entry.kind,
                    crate::jobs::KINDS.join(", ")
                );
                ConfigError::new(key(".kind"), reason)
            })?;
        let fields = fields_of(kind).unwrap_or_default();
        let unknown = |what: &str, field: &str| {
            let reason = format!("{field:?} is not a field of {kind} ({})", fields.join(", "));
            ConfigError::new(key(what), reason)
        };
        let positional = entry.args.clone().unwrap_or_else(|| fields.clone());
        for (i, field) in positional.iter().enumerate() {
            if !fields.contains(field) {
                return Err(unknown(".args", field));
            }
            if positional[..i].contains(field) {
                return Err(ConfigError::new(
                    key(".args"),
                    format!("{field:?} is named twice"),
                ));
            }
        }
        if let Some(field) = entry.defaults.keys().find(|f| !fields.contains(f)) {
            return Err(unknown(".defaults", field));
        }
        Ok(Route {
            kind,
            positional,
            fields,
            defaults: entry.defaults.clone(),
        })
    }

    /// The payload of one call of `task`: `args` fill the positional
    /// fields in order, `kwargs` name theirs, `defaults` fill the rest.
    /// Too many arguments, an unknown keyword or one field given twice is
    /// refused as Python would refuse the call. (Whether the values fit the
    /// kind is the kind's schema's to say.)
    pub fn payload(
        &self,
        task: &str,
        args: &[Value],
        kwargs: &Map<String, Value>,
    ) -> Result<Value, ArgumentError> {
        let refuse = |reason: String| ArgumentError {
            task: task.rsplit('.').next().unwrap_or(task).to_string(),
            reason,
        };
        if args.len() > self.positional.len() {
            return Err(refuse(format!(
                "takes {} positional arguments but {} were given",
                self.positional.len(),
                args.len()
            )));
        }
        let mut payload: Map<String, Value> = self
            .positional
            .iter()
            .cloned()
            .zip(args.iter().cloned())
            .collect();
        for (name, value) in kwargs {
            if !self.fields.contains(name) {
                return Err(refuse(format!(
                    "got an unexpected keyword argument '{name}'"
                )));
            }
            if payload.insert(name.clone(), value.clone()).is_some() {
                return Err(refuse(format!("got multiple values for argument '{name}'")));
            }
        }
        for (name, value) in &self.defaults {
            payload.entry(name.clone()).or_insert_with(|| value.clone());
        }
        Ok(Value::Object(payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route(kind: &str, args: Option<&[&str]>, defaults: Value) -> Result<Route, ConfigError> {
        let entry = CeleryTask {
            kind: kind.into(),
            args: args.map(|a| a.iter().map(|s| s.to_string()).collect()),
            defaults: defaults.as_object().cloned().unwrap_or_default(),
        };
        Route::new("apps.t.task", &entry)
    }

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn positional_arguments_follow_the_schema_order() {
        let file = route("file_attached", None, json!({})).unwrap();
        let payload = file.payload(
            "t",
            &[json!(42), json!(501), json!("report.pdf"), json!(7)],
            &Map::new(),
        );
        assert_eq!(
            payload.unwrap(),
            json!({"task_id": 42, "file_id": 501, "file_name": "report.pdf", "uploaded_by": 7})
        );
        let notify = route("notify", None, json!({"notification_type": "general"})).unwrap();
        let payload = notify.payload("t", &[json!(5), json!("Hi"), json!("there")], &Map::new());
        assert_eq!(
            payload.unwrap(),
            json!({"user_id": 5, "title": "Hi", "message": "there", "notification_type": "general"})
        );
    }

    #[test]
    fn keyword_arguments_go_by_name_and_override_defaults() {
        let status = route("status_changed", None, json!({})).unwrap();
        let payload = status
            .payload(
                "t",
                &[json!(42), json!("todo"), json!("review"), json!(7)],
                &map(json!({"reason": "ready"})),
            )
            .unwrap();
        assert_eq!(payload["reason"], "ready");
        let notify = route("notify", None, json!({"notification_type": "general"})).unwrap();
        let payload = notify
            .payload(
                "t",
                &[json!(5)],
                &map(json!({"title": "a", "message": "b", "notification_type": "x"})),
            )
            .unwrap();
        assert_eq!(payload["notification_type"], "x");
    }

    #[test]
    fn an_args_list_reorders_the_positional_fields() {
        let file = route(
            "file_attached",
            Some(&["file_id", "task_id"]),
            json!({"file_name": "f", "uploaded_by": 1}),
        )
        .unwrap();
        let payload = file
            .payload("t", &[json!(501), json!(42)], &Map::new())
            .unwrap();
        assert_eq!(payload["task_id"], 42);
        assert_eq!(payload["file_id"], 501);
    }

    #[test]
    fn calls_python_would_refuse_are_refused() {
        let file = route("file_attached", None, json!({})).unwrap();
        let five = [json!(1), json!(2), json!("f"), json!(3), json!(4)];
        let error = file
            .payload("apps.tasks.tasks.file_attached", &five, &Map::new())
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "file_attached() takes 4 positional arguments but 5 were given"
        );
        let error = file
            .payload("t", &[], &map(json!({"colour": 1})))
            .unwrap_err();
        assert!(
            error
                .reason
                .contains("unexpected keyword argument 'colour'")
        );
        let error = file
            .payload("t", &[json!(1)], &map(json!({"task_id": 1})))
            .unwrap_err();
        assert!(
            error
                .reason
                .contains("multiple values for argument 'task_id'")
        );
    }

    #[test]
    fn bad_entries_are_configuration_errors() {
        assert!(
            route("mail", None, json!({}))
                .unwrap_err()
                .reason
                .contains("unknown job kind")
        );
        let error = route("notify", Some(&["user_id", "colour"]), json!({})).unwrap_err();
        assert_eq!(error.key, "celery.tasks.\"apps.t.task\".args");
        let error = route("notify", None, json!({"colour": 1})).unwrap_err();
        assert_eq!(error.key, "celery.tasks.\"apps.t.task\".defaults");
        assert!(route("notify", Some(&["title", "title"]), json!({})).is_err());
    }
}

//! The scheduled scans as the configuration asks for them: cron
//! expressions (six fields, as tokio-cron-scheduler reads them), the job
//! each runs and the period a tick belongs to. Pure: the worker's scheduler
//! runs them, the ingress and the dashboard read them.

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};

use super::{DeadlineReminder, Job, OverdueCheck};
use crate::config::{ConfigError, WorkerSettings};

/// A tick that arrives this late still belongs to its period.
const LATENESS: TimeDelta = TimeDelta::seconds(2);

/// Parses a six-field cron expression as tokio-cron-scheduler does.
pub fn parse_cron(expression: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expression)
        .map_err(|e| format!("not a six-field cron expression ({e})"))
}

/// One scheduled scan.
#[derive(Clone)]
pub struct Schedule {
    pub name: &'static str,
    pub cron: Cron,
    pub expression: String,
    pub job: Job,
}

/// The scans the configuration asks for.
pub fn schedules(settings: &WorkerSettings) -> Result<Vec<Schedule>, String> {
    let entries = [
        (
            "overdue_check",
            &settings.overdue_schedule,
            Job::OverdueCheck(OverdueCheck {}),
        ),
        (
            "deadline_reminder",
            &settings.deadline_reminder_schedule,
            Job::DeadlineReminder(DeadlineReminder { task_id: None }),
        ),
    ];
    entries
        .into_iter()
        .map(|(name, expression, job)| {
            Ok(Schedule {
                name,
                cron: parse_cron(expression)?,
                expression: expression.clone(),
                job,
            })
        })
        .collect()
}

/// The period a tick at `now` belongs to: the latest cron time at or before
/// `now + LATENESS`, truncated to the second.
pub fn period_of(cron: &Cron, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let latest = (now + LATENESS).trunc_subsecs(0);
    cron.find_previous_occurrence(&latest, true).ok()
}

/// The worker's schedules parse: the check `startup` runs at load.
pub fn check_settings(settings: &WorkerSettings) -> Result<(), ConfigError> {
    for (key, schedule) in [
        ("worker.overdue_schedule", &settings.overdue_schedule),
        (
            "worker.deadline_reminder_schedule",
            &settings.deadline_reminder_schedule,
        ),
    ] {
        parse_cron(schedule).map_err(|reason| ConfigError::new(key, reason))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_cron_names_its_key() {
        let mut settings = crate::config::Settings::defaults().worker;
        check_settings(&settings).unwrap();
        settings.deadline_reminder_schedule = "*/5 * * * *".into();
        let error = check_settings(&settings).unwrap_err();
        assert_eq!(error.key, "worker.deadline_reminder_schedule");
        assert!(error.reason.contains("six-field"), "{error}");
    }
}

//! Checks of [`QueueConfig`] when the queue is built, and the timings it reports.

use order_core::ports::QueueTimings;

use crate::config::QueueConfig;
use crate::connection::ConnectError;

/// The port's timings out of the adapter's settings.
pub(super) fn timings(settings: &QueueConfig) -> QueueTimings {
    QueueTimings {
        visibility_timeout: settings.visibility_timeout,
        max_attempts: settings.max_attempts,
        retry_backoff: settings.retry_backoff,
    }
}

/// The port's rule ([`QueueTimings::validate`]) plus this adapter's own.
pub(super) fn validate(settings: &QueueConfig) -> Result<(), ConnectError> {
    timings(settings)
        .validate()
        .map_err(|e| ConnectError::InvalidConfig(e.to_string()))?;
    let problem = if settings.max_len == 0 {
        "max_len must be at least 1"
    } else if settings.blocking_connections == 0 {
        "blocking_connections must be at least 1"
    } else if settings.stream.is_empty()
        || settings.group.is_empty()
        || settings.consumer.is_empty()
    {
        "stream, group and consumer names must not be empty"
    } else if settings.poll_interval.is_zero() {
        "poll_interval must not be zero"
    } else if settings.idle_consumer_timeout < settings.poll_interval.saturating_mul(2) {
        // A live consumer touches the group about every poll_interval; a shorter bound
        // would keep deleting (harmlessly, but pointlessly) consumers that are alive.
        "idle_consumer_timeout must be at least twice poll_interval"
    } else {
        return Ok(());
    };
    Err(ConnectError::InvalidConfig(problem.into()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn settings_are_validated_with_the_port_rule_and_ours() {
        assert!(validate(&QueueConfig::default()).is_ok());
        let mut zero_backoff = QueueConfig::default();
        zero_backoff.retry_backoff.base = Duration::ZERO;
        assert!(matches!(
            validate(&zero_backoff),
            Err(ConnectError::InvalidConfig(m)) if m.contains("retry_backoff")
        ));
        let mut jittered = QueueConfig::default();
        jittered.retry_backoff.jitter = 0.1;
        assert!(matches!(
            validate(&jittered),
            Err(ConnectError::InvalidConfig(m)) if m.contains("retry_backoff") && m.contains("jitter")
        ));
        let zero_visibility = QueueConfig {
            visibility_timeout: Duration::ZERO,
            ..QueueConfig::default()
        };
        assert!(validate(&zero_visibility).is_err());
        let short_idle = QueueConfig {
            idle_consumer_timeout: Duration::from_millis(900),
            ..QueueConfig::default()
        };
        assert!(validate(&short_idle).is_err());
    }

    #[test]
    fn the_default_retry_budget_outlives_the_default_lease() {
        let budget = timings(&QueueConfig::default()).retry_budget();
        assert_eq!(budget, Duration::from_secs(127));
        assert!(budget > Duration::from_secs(30));
    }
}

//! Refusals both sides agree on. A task the engine does not take carries a [`Refusal`] code; a
//! batch refused as a whole carries a `google.rpc.Code` in its [`BatchError`]. The engine builds
//! its answers with these functions and the supervisor reads them back with [`delivery_of`] and
//! [`batch_is_retryable`], so the codes are spelled in one place and nobody parses a reason.

use crate::proto::{BatchError, Refusal, TaskAck};

/// The answer for a task the engine holds (`duplicate`: it already did and will not run it again).
pub(crate) fn accepted(task_id: String, duplicate: bool) -> TaskAck {
    TaskAck {
        task_id,
        accepted: true,
        reason: String::new(),
        duplicate,
        refusal: Refusal::None as i32,
    }
}

/// The answer for a task the engine does not take, with the code the supervisor acts on and a
/// reason for people.
pub(crate) fn refused(task_id: String, refusal: Refusal, reason: String) -> TaskAck {
    TaskAck {
        task_id,
        accepted: false,
        reason,
        duplicate: false,
        refusal: refusal as i32,
    }
}

/// A whole-batch refusal.
pub(crate) fn batch_error(code: tonic::Code, message: String) -> BatchError {
    BatchError {
        code: code as i32,
        message,
    }
}

/// Whether a batch refused as a whole may succeed if sent again later: the engine was full or
/// stopping. Anything else (a malformed batch) would be refused again.
pub(crate) fn batch_is_retryable(error: &BatchError) -> bool {
    let code = tonic::Code::from_i32(error.code);
    matches!(
        code,
        tonic::Code::ResourceExhausted | tonic::Code::Unavailable
    )
}

/// What a task's acknowledgement means for the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckMeaning {
    /// The engine holds the task (`duplicate`: it already did).
    Held {
        /// Acknowledged again, not run again.
        duplicate: bool,
    },
    /// Not taken now; sending it again later may succeed.
    Later,
    /// Never taken as sent.
    Never,
    /// Refused for an older assignment epoch: another cluster member runs the engine now.
    Stale,
}

/// Read a task acknowledgement by its code.
pub(crate) fn delivery_of(ack: &TaskAck) -> AckMeaning {
    if ack.accepted {
        return AckMeaning::Held {
            duplicate: ack.duplicate,
        };
    }
    match Refusal::try_from(ack.refusal) {
        Ok(Refusal::EngineFull | Refusal::AttemptRunning) => AckMeaning::Later,
        Ok(Refusal::StaleEpoch) => AckMeaning::Stale,
        // An unknown code from a newer engine, or none from an older one: final, so a task is
        // never resent in a loop the engine will keep refusing.
        Ok(Refusal::Invalid | Refusal::None) | Err(_) => AckMeaning::Never,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_engine_and_a_running_attempt_mean_later_an_invalid_task_never() {
        let later = refused("a".into(), Refusal::EngineFull, "full".into());
        let running = refused("b".into(), Refusal::AttemptRunning, "attempt 1".into());
        let invalid = refused("c".into(), Refusal::Invalid, "no check".into());
        assert_eq!(delivery_of(&later), AckMeaning::Later);
        assert_eq!(delivery_of(&running), AckMeaning::Later);
        assert_eq!(delivery_of(&invalid), AckMeaning::Never);
        assert_eq!(
            delivery_of(&accepted("d".into(), true)),
            AckMeaning::Held { duplicate: true }
        );
    }

    #[test]
    fn the_reason_text_never_decides() {
        let mut ack = refused("a".into(), Refusal::Invalid, "RESOURCE_EXHAUSTED: x".into());
        assert_eq!(delivery_of(&ack), AckMeaning::Never);
        ack.refusal = 99;
        assert_eq!(delivery_of(&ack), AckMeaning::Never);
    }

    #[test]
    fn full_or_stopping_batches_are_retried_malformed_ones_are_not() {
        assert!(batch_is_retryable(&batch_error(
            tonic::Code::ResourceExhausted,
            String::new()
        )));
        assert!(batch_is_retryable(&batch_error(
            tonic::Code::Unavailable,
            String::new()
        )));
        assert!(!batch_is_retryable(&batch_error(
            tonic::Code::InvalidArgument,
            String::new()
        )));
    }
}

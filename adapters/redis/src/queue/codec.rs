//! Wire forms of the queue: a job in a stream entry, and the receipt of a delivery.

use order_core::domain::OrderId;
use order_core::ports::{Job, QueueError};

/// A receipt, split: the stream entry and the attempt of the delivery it names.
pub(super) struct Receipt<'a> {
    pub(super) id: &'a str,
    pub(super) attempt: u32,
}

/// Splits a receipt, `<ms>-<seq>/<attempt>` (a stream entry id and the attempt of the
/// delivery), or `None` when this queue could not have issued it.
pub(super) fn parse_receipt(receipt: &str) -> Option<Receipt<'_>> {
    let (id, attempt) = receipt.split_once('/')?;
    let (ms, seq) = id.split_once('-')?;
    if !(is_digits(ms) && is_digits(seq) && is_digits(attempt)) {
        return None;
    }
    let attempt = attempt.parse::<u32>().ok().filter(|a| *a >= 1)?;
    Some(Receipt { id, attempt })
}

/// [`parse_receipt`], as the port's error for a receipt this queue never issued.
pub(super) fn check_receipt(receipt: &str) -> Result<Receipt<'_>, QueueError> {
    parse_receipt(receipt).ok_or_else(|| {
        QueueError::Unexpected(anyhow::anyhow!("not a receipt of this queue: {receipt:?}"))
    })
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The wire form of a job in a stream entry: `process_order:<id>`.
pub(super) fn encode_job(job: Job) -> String {
    match job {
        Job::ProcessOrder(id) => format!("process_order:{id}"),
    }
}

/// Parses [`encode_job`]'s output; `None` for anything else.
pub(super) fn decode_job(text: &str) -> Option<Job> {
    let (kind, rest) = text.split_once(':')?;
    match kind {
        "process_order" => {
            let id = rest.parse::<u64>().ok()?;
            OrderId::new(id).ok().map(Job::ProcessOrder)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_round_trip_and_garbage_is_rejected() {
        let job = Job::ProcessOrder(OrderId::new(42).unwrap());
        assert_eq!(encode_job(job), "process_order:42");
        assert_eq!(decode_job("process_order:42"), Some(job));
        assert_eq!(decode_job("process_order:0"), None);
        assert_eq!(decode_job("process_order:x"), None);
        assert_eq!(decode_job("other:1"), None);
        assert_eq!(decode_job(""), None);
    }

    #[test]
    fn receipts_name_an_entry_and_an_attempt() {
        let receipt = check_receipt("1700000000000-0/3").unwrap();
        assert_eq!((receipt.id, receipt.attempt), ("1700000000000-0", 3));
        // A bare entry id names a job, not a delivery: refused.
        assert!(check_receipt("1700000000000-0").is_err());
        assert!(check_receipt("1700000000000-0/0").is_err());
        assert!(check_receipt("1700000000000-0/x").is_err());
        assert!(check_receipt("1-2-3/1").is_err());
        assert!(check_receipt("abc/1").is_err());
        assert!(check_receipt("-1/1").is_err());
        assert!(check_receipt("1-1/99999999999").is_err());
    }
}

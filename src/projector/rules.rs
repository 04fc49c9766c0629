//! The status model as rules: which status may follow which (forward only),
//! which are final, and how a multipart SMS's parts decide its outcome.
//! Pure functions; the projector's fold applies them.

/// Position of a status on its channel's path; a message only moves to a
/// higher rank. `None` for a status Herald does not know.
///
/// SMS and WhatsApp: queued/scheduled < sending < sent < delivered |
/// undelivered | failed | expired | rejected | canceled < read (WhatsApp).
/// Voice: queued/scheduled < sending < sent < ringing < in_progress <
/// completed | busy | no_answer | failed | expired | rejected | canceled.
pub fn rank(channel: &str, status: &str) -> Option<u8> {
    let r = match status {
        "queued" | "scheduled" => 0,
        "sending" => 1,
        "sent" => 2,
        _ if channel == "voice" => match status {
            "ringing" => 3,
            "in_progress" => 4,
            "completed" | "busy" | "no_answer" | "failed" | "expired" | "rejected" | "canceled" => {
                5
            }
            _ => return None,
        },
        "delivered" | "undelivered" | "failed" | "expired" | "rejected" | "canceled" => 3,
        "read" if channel == "whatsapp" => 4,
        _ => return None,
    };
    Some(r)
}

/// Whether nothing can follow `status` on `channel`. WhatsApp `delivered` is
/// not final: `read` may follow.
pub fn is_final(channel: &str, status: &str) -> bool {
    match (channel, status) {
        ("whatsapp", "delivered") => false,
        ("whatsapp", "read") => true,
        (_, "read") => false,
        ("voice", s) => matches!(
            s,
            "completed" | "busy" | "no_answer" | "failed" | "expired" | "rejected" | "canceled"
        ),
        (_, s) => matches!(
            s,
            "delivered" | "undelivered" | "failed" | "expired" | "rejected" | "canceled"
        ),
    }
}

/// Whether a message in `current` moves to `next`: only forward, and never
/// out of a final status.
pub fn advances(channel: &str, current: &str, next: &str) -> bool {
    if is_final(channel, current) {
        return false;
    }
    match (rank(channel, current), rank(channel, next)) {
        (Some(c), Some(n)) => n > c,
        // A message in a status we do not know (older data) moves to any
        // known one; an unknown new status is only logged.
        (None, Some(_)) => true,
        (_, None) => false,
    }
}

/// How bad a final part outcome is; the worst part decides a multipart
/// message that is not wholly delivered.
fn severity(status: &str) -> u8 {
    match status {
        "delivered" => 0,
        "expired" => 1,
        "undelivered" => 2,
        "failed" => 3,
        "rejected" => 4,
        _ => 2,
    }
}

/// The outcome of a multipart SMS from its parts' latest states (`None`: no
/// receipt yet). `None` until every part has a final state; then
/// `delivered` when all are delivered, else the worst part's outcome.
pub fn multipart_outcome(channel: &str, parts: &[Option<&str>]) -> Option<String> {
    if parts.is_empty() {
        return None;
    }
    let mut worst: Option<&str> = None;
    for part in parts {
        let state = (*part)?;
        if !is_final(channel, state) {
            return None;
        }
        if worst.is_none_or(|w| severity(state) > severity(w)) {
            worst = Some(state);
        }
    }
    worst.map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sms_moves_forward_only() {
        assert!(advances("sms", "queued", "sending"));
        assert!(advances("sms", "sending", "sent"));
        assert!(advances("sms", "queued", "sent"), "skipping is fine");
        assert!(advances("sms", "sent", "delivered"));
        assert!(!advances("sms", "delivered", "sent"), "late sent");
        assert!(
            !advances("sms", "delivered", "undelivered"),
            "first final wins"
        );
        assert!(!advances("sms", "sent", "sending"));
        assert!(!advances("sms", "delivered", "read"), "read is WhatsApp's");
        assert!(!advances("sms", "sent", "ringing"), "voice status on SMS");
    }

    #[test]
    fn whatsapp_reads_after_delivered() {
        assert!(advances("whatsapp", "delivered", "read"));
        assert!(
            advances("whatsapp", "sent", "read"),
            "read before delivered"
        );
        assert!(!advances("whatsapp", "read", "delivered"));
        assert!(!advances("whatsapp", "failed", "read"));
        assert!(!is_final("whatsapp", "delivered"));
        assert!(is_final("whatsapp", "read"));
    }

    #[test]
    fn voice_path() {
        assert!(advances("voice", "sent", "ringing"));
        assert!(advances("voice", "ringing", "in_progress"));
        assert!(advances("voice", "in_progress", "completed"));
        assert!(advances("voice", "ringing", "no_answer"));
        assert!(!advances("voice", "completed", "ringing"));
        assert!(!advances("voice", "busy", "completed"));
        assert!(!advances("voice", "sent", "delivered"));
        assert!(is_final("voice", "busy"));
        assert!(!is_final("voice", "in_progress"));
    }

    #[test]
    fn unknown_statuses_are_logged_not_applied() {
        assert!(!advances("sms", "sent", "teleported"));
        assert!(advances("sms", "mystery", "sent"));
    }

    #[test]
    fn multipart_waits_for_every_part_then_takes_the_worst() {
        let d = Some("delivered");
        let u = Some("undelivered");
        assert_eq!(multipart_outcome("sms", &[d, d, None]), None);
        assert_eq!(multipart_outcome("sms", &[d, Some("sent"), d]), None);
        assert_eq!(
            multipart_outcome("sms", &[d, d, d]).as_deref(),
            Some("delivered")
        );
        assert_eq!(
            multipart_outcome("sms", &[d, d, u]).as_deref(),
            Some("undelivered")
        );
        assert_eq!(
            multipart_outcome("sms", &[Some("expired"), Some("rejected"), u]).as_deref(),
            Some("rejected")
        );
        assert_eq!(multipart_outcome("sms", &[]), None);
    }
}

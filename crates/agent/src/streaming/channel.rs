//! The `channel.k8s.io` WebSocket protocol (v4 and v5): every binary message
//! starts with a channel number; stdin 0, stdout 1, stderr 2, the error
//! channel 3 (one `Status` at the end) and terminal resizes 4. v5 adds 255:
//! the client closes one of its channels (`[255, 0]`: end of stdin).

use serde_json::json;

/// The protocols offered, most preferred first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// Standard input (client to server).
pub const STDIN: u8 = 0;
/// Standard output.
pub const STDOUT: u8 = 1;
/// Standard error.
pub const STDERR: u8 = 2;
/// The error channel: the final `Status`.
pub const ERROR: u8 = 3;
/// Terminal size changes, JSON `{"Width":..,"Height":..}`.
pub const RESIZE: u8 = 4;
/// v5: the client closed one of its channels.
pub const CLOSE: u8 = 255;

/// A message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// Bytes for the process's standard input.
    Stdin(Vec<u8>),
    /// The terminal's new size.
    Resize {
        /// Columns.
        width: u16,
        /// Rows.
        height: u16,
    },
    /// No more standard input.
    CloseStdin,
    /// Anything else (unknown channels, unreadable resizes): ignored.
    Ignored,
}

/// Reads a binary message from the client.
pub fn parse(message: &[u8]) -> ClientMessage {
    let Some((&channel, rest)) = message.split_first() else {
        return ClientMessage::Ignored;
    };
    match channel {
        STDIN => ClientMessage::Stdin(rest.to_vec()),
        RESIZE => {
            let size: serde_json::Value = serde_json::from_slice(rest).unwrap_or_default();
            let dim = |k: &str| size[k].as_u64().and_then(|v| u16::try_from(v).ok());
            match (dim("Width"), dim("Height")) {
                (Some(width), Some(height)) => ClientMessage::Resize { width, height },
                _ => ClientMessage::Ignored,
            }
        }
        CLOSE if rest.first() == Some(&STDIN) => ClientMessage::CloseStdin,
        _ => ClientMessage::Ignored,
    }
}

/// A message on `channel` carrying `data`.
pub fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + data.len());
    out.push(channel);
    out.extend_from_slice(data);
    out
}

/// The error channel's final `Status` for a process that exited with `code`
/// (as upstream writes it: `NonZeroExitCode` with an `ExitCode` cause).
pub fn exit_status(command: &[String], code: i32) -> Vec<u8> {
    let status = if code == 0 {
        json!({"metadata": {}, "status": "Success"})
    } else {
        json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
                command.join(" ")
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        })
    };
    frame(ERROR, status.to_string().as_bytes())
}

/// The error channel's `Status` for a failure that is not an exit code.
pub fn failure(message: &str) -> Vec<u8> {
    let status = json!({"metadata": {}, "status": "Failure", "message": message,
        "reason": "InternalError", "code": 500});
    frame(ERROR, status.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_are_read_by_channel() {
        assert_eq!(parse(b"\x00hi"), ClientMessage::Stdin(b"hi".to_vec()));
        assert_eq!(
            parse(b"\x04{\"Width\":120,\"Height\":40}"),
            ClientMessage::Resize {
                width: 120,
                height: 40
            }
        );
        assert_eq!(parse(b"\x04{\"Width\":-1}"), ClientMessage::Ignored);
        assert_eq!(parse(&[255, 0]), ClientMessage::CloseStdin);
        assert_eq!(parse(&[255, 1]), ClientMessage::Ignored);
        assert_eq!(parse(&[]), ClientMessage::Ignored);
        assert_eq!(parse(&[9, 1, 2]), ClientMessage::Ignored);
    }

    #[test]
    fn a_non_zero_exit_carries_its_code_as_a_cause() {
        let ok = exit_status(&["true".into()], 0);
        assert_eq!(ok[0], ERROR);
        let v: serde_json::Value = serde_json::from_slice(&ok[1..]).expect("json");
        assert_eq!(v["status"], "Success");
        let bad = exit_status(&["sh".into(), "-c".into(), "exit 3".into()], 3);
        let v: serde_json::Value = serde_json::from_slice(&bad[1..]).expect("json");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
    }
}

//! The local terminal (`common::term`) and conmon's resize message.

pub use common::term::{RawMode, stdin_is_tty, window_size};

/// conmon's control message for a resize: type 1, then height and width.
pub fn resize_message(rows: u16, cols: u16) -> String {
    format!("1 {rows} {cols}\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn resize_message_is_conmons_format() {
        assert_eq!(super::resize_message(50, 120), "1 50 120\n");
    }
}

//! The local terminal (`common::term`) and conmon's resize message.

pub use common::lifecycle::ops::attach::resize_message;
pub use common::term::{RawMode, stdin_is_tty, window_size};

//! The `taskyard` command.

fn main() {}

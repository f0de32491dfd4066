//! The library side of the `taskyard` command, shared by its bench scenarios and its
//! tests: [`process`] starts, signals and stops `taskyard bench worker` processes and
//! reads the books they keep. Applications use the `taskyard` crate, not this one.

pub mod process;

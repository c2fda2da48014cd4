//! amzmusic-bench: measures our pipeline beside playbin3 + dashdemux2 on the emulator (ABR
//! quality of experience, time to first audio, CPU, memory, decryption, a 50-track soak) and writes
//! BENCHMARKS.md.

pub mod decrypt;
pub mod emulator;
pub mod machine;
pub mod mpd;
pub mod play;
pub mod report;
pub mod score;
pub mod soak;
pub mod suite;

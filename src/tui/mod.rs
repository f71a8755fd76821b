//! The interactive terminal UI (being built).

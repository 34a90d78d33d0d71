//! Contract suite for the `events` port (being written).

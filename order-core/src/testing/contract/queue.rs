//! Contract suite for the `queue` port (being written).

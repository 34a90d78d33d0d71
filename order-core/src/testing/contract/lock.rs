//! Contract suite for the `lock` port (being written).

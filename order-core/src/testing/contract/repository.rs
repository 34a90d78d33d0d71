//! Contract suite for the `repository` port (being written).

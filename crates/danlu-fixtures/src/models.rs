//! Key names and shapes of real model families, and writers of (sparse) files holding them.

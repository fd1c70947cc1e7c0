//! Portable runtime for Unpersonal model bundles. Built in issue 3.

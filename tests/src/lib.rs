//! The FerroLB testbed harness (see TESTBED.md); filled in by the testbed issue.

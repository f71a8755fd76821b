//! `.npz` archives: each member is one layer named `archive/member`.

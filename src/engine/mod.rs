//! Run and plan: read, enrich, lookup, render, write, checkpoint.

"""Pure estimators (numpy/scipy, no SQL, no study policy), each checked against R in tests/reference."""

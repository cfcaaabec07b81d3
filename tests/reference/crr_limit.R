# cmprsk::crr as vigil.stats.finegray reports a model where some coefficients diverge (the limit of the
# MLE), shared by finegray_reference.R and analysis_v11_reference.R. Patients of a level without events
# (`masked`) leave every risk set: a column of them with a start of MASK_INIT, where crr's likelihood of
# the other coefficients is that of the limit. Columns aliased (QR with an intercept over the patients of
# the risk sets) are dropped and named, as crr's solve() would fail on them.
MASK_INIT <- -20
ALIAS_TOLERANCE <- 1e-9

# Returns list(X = the columns fitted (the mask column last, when any), init, aliased = the names dropped);
# X has no column when nothing is left to fit.
crr_design <- function(d, X, masked) {
  event <- d$status == 1
  in_risk <- (d$t >= min(d$t[event]) | d$status == 2) & !masked
  q <- qr(cbind(1, X[in_risk, , drop = FALSE]), tol = ALIAS_TOLERANCE)
  aliased <- character(0)
  if (q$rank < ncol(X) + 1) {
    drop <- q$pivot[(q$rank + 1):(ncol(X) + 1)] - 1
    aliased <- colnames(X)[drop]
    X <- X[, -drop, drop = FALSE]
  }
  init <- rep(0, ncol(X))
  if (ncol(X) > 0 && any(masked)) {
    X <- cbind(X, masked = as.numeric(masked))
    init <- c(init, MASK_INIT)
  }
  list(X = X, init = init, aliased = aliased)
}

# Expected values for vigil.stats.finegray (SAP A10), computed with R's cmprsk::crr.
#
# Usage (from the project root):  Rscript tests/reference/finegray_reference.R tests/reference
# Reads  <root>/data/<dataset>.csv  (ordinary, few_events: make_datasets.py; finegray_ties:
#        make_finegray_datasets.py): t in days >= 1, status 0 censored / 1 event / 2 death, the strata
# Writes <root>/expected/finegray/<dataset>.csv and <root>/expected/finegray/versions.csv
#
# Models: crr univariable for each stratum variable and the A5 multivariable model, crr's defaults
# (failcode = 1, cencode = 0, gtol = 1e-6, maxiter = 10, variance = TRUE). Treatment contrasts
# against the first level (site: alphabetical), as survival_reference.R. One row per non-reference
# level: coef, se = sqrt(diag(var)) (crr's sandwich), shr, Wald CI, p, crr's loglik, n, converged,
# and `reason` when there is no coefficient:
#   no patients    the level has no patients;
#   no events      the level has patients but no event: its coefficient tends to -inf;
#   reference      the variable's reference level has no event: its coefficients are infinite;
#   aliased        the column is a linear combination of the others and a constant over the
#                  patients of the risk sets (crr's solve() would fail);
#   no model       no event, or no column left.
# Where a level has no events the reported model is the limit of crr's as the diverging
# coefficients go to infinity: its patients leave the risk sets but stay in the censoring
# Kaplan-Meier. crr is given one more column, the indicator of those patients, started at
# init = -20 (its coefficient only moves further down), so they enter the risk sets at weight
# exp(-20) = 2e-9 of the others'; the other coefficients and variances are the limit to ~1e-9.
# The variable's columns are its levels with events after the first one (the reference, or
# when the reference has no event the first level with events).

suppressPackageStartupMessages({
  library(survival)
  library(cmprsk)
})

args <- commandArgs(trailingOnly = TRUE)
root <- if (length(args) >= 1) args[1] else "tests/reference"
datasets <- if (length(args) >= 2) args[-1] else c("ordinary", "few_events", "finegray_ties")

source(file.path(root, "sap_levels.R"))  # SAP_LEVELS, STRATIFIERS, MULTIVARIABLE, levels_of
source(file.path(root, "crr_limit.R"))  # crr_design, MASK_INIT, ALIAS_TOLERANCE

fg_model <- function(d, vars, model) {
  event <- d$status == 1
  info <- list()
  masked <- rep(FALSE, nrow(d))
  for (v in vars) {
    lv <- levels_of(d, v)
    with_events <- lv[lv %in% d[[v]][event]]
    masked <- masked | !(d[[v]] %in% with_events)
    info[[v]] <- list(levels = lv, present = lv[lv %in% d[[v]]], with_events = with_events)
  }
  X <- matrix(0, nrow(d), 0)
  for (v in vars) for (lv in info[[v]]$with_events[-1]) {
    X <- cbind(X, as.numeric(d[[v]] == lv))
    colnames(X)[ncol(X)] <- paste0(v, "[", lv, "]")
  }
  aliased <- character(0)
  fit <- NULL
  if (any(event) && ncol(X) > 0) {
    design <- crr_design(d, X, masked)
    aliased <- design$aliased
    if (ncol(design$X) > 0) fit <- crr(d$t, d$status, design$X, init = design$init)
  }
  z <- qnorm(0.975)
  rows <- list()
  for (v in vars) {
    lv_all <- info[[v]]$levels
    for (lv in lv_all[-1]) {
      name <- paste0(v, "[", lv, "]")
      reason <- if (!(lv %in% info[[v]]$present)) "no patients"
        else if (!(lv %in% info[[v]]$with_events)) "no events"
        else if (!(lv_all[1] %in% info[[v]]$with_events)) "reference"
        else if (name %in% aliased) "aliased"
        else if (is.null(fit)) "no model"
        else NA_character_
      coef <- se <- NA_real_
      if (is.na(reason)) {
        coef <- unname(fit$coef[name])
        se <- sqrt(fit$var[match(name, names(fit$coef)), match(name, names(fit$coef))])
      }
      rows[[length(rows) + 1]] <- data.frame(
        model = model, covariates = paste(vars, collapse = "+"), variable = v, level = lv,
        coef = coef, se = se, shr = exp(coef), ci_lower = exp(coef - z * se), ci_upper = exp(coef + z * se),
        p_value = 2 * pnorm(-abs(coef / se)),
        loglik = if (is.null(fit)) NA_real_ else fit$loglik,
        n = if (is.null(fit)) nrow(d) else fit$n,
        converged = if (is.null(fit)) NA else fit$converged,
        reason = reason)
    }
  }
  do.call(rbind, rows)
}

write_out <- function(frame, path) {
  # 15 significant digits
  for (col in names(frame)) if (is.double(frame[[col]])) {
    frame[[col]] <- ifelse(is.na(frame[[col]]), NA, sprintf("%.15g", frame[[col]]))
  }
  write.csv(frame, path, row.names = FALSE, na = "")
}

out <- file.path(root, "expected", "finegray")
dir.create(out, recursive = TRUE, showWarnings = FALSE)
for (name in datasets) {
  d <- read.csv(file.path(root, "data", paste0(name, ".csv")), colClasses = "character")
  d$t <- as.numeric(d$t)
  d$status <- as.integer(d$status)
  models <- c(lapply(STRATIFIERS, function(v) list(vars = v, model = paste0("univariable:", v))),
              list(list(vars = MULTIVARIABLE, model = "multivariable")))
  result <- do.call(rbind, lapply(models, function(m) fg_model(d, m$vars, m$model)))
  write_out(result, file.path(out, paste0(name, ".csv")))
  cat(name, ": ", nrow(d), " patients, ", nrow(result), " rows\n", sep = "")
}
write.csv(data.frame(r = R.version.string, cmprsk = as.character(packageVersion("cmprsk")),
                     survival = as.character(packageVersion("survival"))),
          file.path(out, "versions.csv"), row.names = FALSE)

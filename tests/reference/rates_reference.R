# Expected values for vigil.stats.rates and vigil.stats.glm (SAP A8, A9, A11), computed with R.
#
# Usage (from the project root):  Rscript tests/reference/rates_reference.R tests/reference
# Reads  <root>/data/{binomial_cases,windows_*,standardisation}.csv
#        (written by tests/reference/make_rates_datasets.py)
# Writes <root>/expected/rates/*.csv, every double with 15 significant digits, and versions.csv.
# Needs Debian's r-base-core, r-cran-mass and r-cran-epitools.
#
#   binomial.csv      A8: binom.test(k, n)$conf.int (Clopper-Pearson 95%)
#   glm_coef.csv      A9: per dataset x family (poisson: glm(family = poisson), negbin: MASS::glm.nb) x
#                     model (unadjusted: events ~ window; adjusted: + age_group + sex + edss), offset
#                     log(person-years), fitted on the aggregated rows as they are: coefficient, SE, z,
#                     Wald p (summary), rate ratio, Wald 95% CI exp(coef -+ qnorm(0.975) SE); NA where R
#                     reports NA (aliased). Terms are named variable=level.
#   glm_fit.csv       the fit: rows, residual df, deviance, Pearson chi2 (sum of squared Pearson
#                     residuals), dispersion = Pearson chi2 / residual df, summary_dispersion (what
#                     summary.glm estimates for a quasi family: sum(weights * working residuals^2) / df),
#                     converged, IRLS iterations, and for glm.nb theta, SE(theta), 2 log-likelihood,
#                     the number of theta/IRLS alternations, and R's warnings.
#   standardised.csv  A11: epitools::ageadjust.direct per stratum (overall, site, charlson) over its
#                     age_group x sex cells with person-time > 0, standard = the whole cohort's
#                     person-time in those cells (SAP A11); rates per person-year.

suppressPackageStartupMessages({
  library(MASS)
  library(epitools)
})

args <- commandArgs(trailingOnly = TRUE)
root <- if (length(args) >= 1) args[1] else "tests/reference"
out_dir <- file.path(root, "expected", "rates")
dir.create(out_dir, recursive = TRUE, showWarnings = FALSE)

write_out <- function(frame, name) {
  for (col in names(frame)) if (is.double(frame[[col]])) frame[[col]] <- sprintf("%.15g", frame[[col]])
  frame[frame == "NA" | frame == "NaN"] <- NA
  write.csv(frame, file.path(out_dir, name), row.names = FALSE, na = "")
}

read_data <- function(name) read.csv(file.path(root, "data", paste0(name, ".csv")), colClasses = "character")

# ---------------------------------------------------------------------------------- A8
cases <- read_data("binomial_cases")
cases$k <- as.integer(cases$k); cases$n <- as.integer(cases$n)
ci <- t(mapply(function(k, n) binom.test(k, n)$conf.int, cases$k, cases$n))
write_out(data.frame(k = cases$k, n = cases$n, ci_lower = ci[, 1], ci_upper = ci[, 2]), "binomial.csv")

# ---------------------------------------------------------------------------------- A9
LEVELS <- list(
  window = c(">365", "0-30", "31-90", "91-365"),   # reference first
  age_group = c("18-29", "30-39", "40-49", ">=50"),
  sex = c("F", "M", "U"),
  edss = c("0-2.5", "3.0-5.5", ">=6.0", "unknown")
)
MODELS <- list(unadjusted = "window", adjusted = c("window", "age_group", "sex", "edss"))
z975 <- qnorm(0.975)

term_names <- function(vars) {
  # R's coefficient name (variable pasted to level) -> variable=level
  map <- c("(Intercept)" = "(Intercept)")
  for (v in vars) for (lv in LEVELS[[v]][-1]) map[paste0(v, lv)] <- paste0(v, "=", lv)
  map
}

capture <- function(expr) {
  warns <- character()
  value <- withCallingHandlers(expr, warning = function(w) {
    warns <<- c(warns, conditionMessage(w))
    invokeRestart("muffleWarning")
  })
  list(value = value, warnings = paste(unique(warns), collapse = "; "))
}

coef_rows <- list(); fit_rows <- list()
for (dataset in c("windows_aggregated", "windows_zero_level", "windows_aliased", "windows_separated")) {
  d <- read_data(dataset)
  for (v in names(LEVELS)) d[[v]] <- factor(d[[v]], levels = LEVELS[[v]])
  d$events <- as.numeric(d$events)
  d$log_py <- log(as.numeric(d$person_days) / 365.25)
  for (model in names(MODELS)) {
    vars <- MODELS[[model]]
    formula <- as.formula(paste("events ~", paste(vars, collapse = " + "), "+ offset(log_py)"))
    for (family in c("poisson", "negbin")) {
      run <- if (family == "poisson") capture(glm(formula, family = poisson, data = d))
             else capture(glm.nb(formula, data = d))
      fit <- run$value
      est <- coef(fit)
      names_map <- term_names(vars)
      sm <- summary(fit)$coefficients   # rows only for the coefficients R estimated
      se <- z <- p <- rep(NA_real_, length(est))
      ok <- names(est) %in% rownames(sm)
      se[ok] <- sm[names(est)[ok], 2]; z[ok] <- sm[names(est)[ok], 3]; p[ok] <- sm[names(est)[ok], 4]
      coef_rows[[length(coef_rows) + 1]] <- data.frame(
        dataset = dataset, family = family, model = model, term = unname(names_map[names(est)]),
        estimate = unname(est), se = se, z = z, p_value = p, rate_ratio = exp(unname(est)),
        ci_lower = exp(unname(est) - z975 * se), ci_upper = exp(unname(est) + z975 * se))
      pearson <- sum(residuals(fit, type = "pearson")^2)
      working <- sum((fit$weights * fit$residuals^2)[fit$weights > 0])
      nb <- family == "negbin"
      fit_rows[[length(fit_rows) + 1]] <- data.frame(
        dataset = dataset, family = family, model = model, n_rows = nrow(d), rank = fit$rank,
        df_residual = fit$df.residual, deviance = fit$deviance, pearson_chi2 = pearson,
        dispersion = pearson / fit$df.residual, summary_dispersion = working / fit$df.residual,
        converged = fit$converged, iterations = fit$iter,
        theta = if (nb) fit$theta else NA_real_, se_theta = if (nb) fit$SE.theta else NA_real_,
        twologlik = if (nb) fit$twologlik else NA_real_,
        warnings = run$warnings)
    }
  }
}
write_out(do.call(rbind, coef_rows), "glm_coef.csv")
write_out(do.call(rbind, fit_rows), "glm_fit.csv")

# ---------------------------------------------------------------------------------- A11
s <- read_data("standardisation")
s$events <- as.numeric(s$events)
s$py <- as.numeric(s$person_days) / 365.25
cells <- expand.grid(sex = LEVELS$sex, age_group = LEVELS$age_group, stringsAsFactors = FALSE)[, c("age_group", "sex")]
cell_sums <- function(sub) {
  key <- paste(sub$age_group, sub$sex)
  k <- paste(cells$age_group, cells$sex)
  data.frame(cells, events = sapply(k, function(x) sum(sub$events[key == x])),
             py = sapply(k, function(x) sum(sub$py[key == x])), row.names = NULL)
}
standard <- cell_sums(s)
std_rows <- list()
strata <- list(list("overall", "all", rep(TRUE, nrow(s))))
for (v in c("site", "charlson")) for (lv in sort(unique(s[[v]]))) strata[[length(strata) + 1]] <- list(v, lv, s[[v]] == lv)
for (st in strata) {
  cs <- cell_sums(s[st[[3]], ])
  keep <- cs$py > 0   # SAP A11: cells where the stratum has no person-time are left out of its standard
  run <- capture(ageadjust.direct(count = cs$events[keep], pop = cs$py[keep], stdpop = standard$py[keep]))
  r <- run$value
  std_rows[[length(std_rows) + 1]] <- data.frame(
    stratifier = st[[1]], stratum = st[[2]], n_cells = sum(keep), events = sum(cs$events),
    person_years = sum(cs$py), crude_rate = unname(r["crude.rate"]), adjusted_rate = unname(r["adj.rate"]),
    ci_lower = unname(r["lci"]), ci_upper = unname(r["uci"]), warnings = run$warnings)
}
write_out(do.call(rbind, std_rows), "standardised.csv")

write_out(data.frame(r = R.version.string, MASS = as.character(packageVersion("MASS")),
                     epitools = as.character(packageVersion("epitools"))), "versions.csv")

# Expected values for vigil.survival / vigil.analysis, computed with R's survival package.
#
# Usage (from the project root):  Rscript tests/reference/survival_reference.R tests/reference
# Reads  <root>/data/<dataset>.csv   (written by tests/reference/make_datasets.py)
# Writes <root>/expected/<dataset>/*.csv and <root>/expected/versions.csv
#
# Each dataset is one first-event outcome shaped like analysis.outcomes (t in days >= 1, status
# 0 censored / 1 event / 2 death without the event, the SAP strata) plus t_followup and n_serious
# (the all_serious person-time and episodes). The Python side (tests/test_survival_reference.py)
# applies the same rules and compares at 1e-6.
#
#   incidence.csv   exact Poisson 95% CI from qchisq (SAP A1), outcomes first_serious, all_serious
#   poisson.csv     the same CI on a grid of (k, person-years), k = 0 included
#   km_days.csv     survfit(conf.type = "log-log"): 1 - S, CI, n.risk at the SAP days (SAP A3)
#   km_curve.csv.gz the whole KM step curve (every distinct time)
#   aj_days.csv     survfit multi-state (Aalen-Johansen, death competing), default CI (SAP A4)
#   aj_curve.csv.gz the whole Aalen-Johansen curve of the event state
#   logrank.csv     survdiff chisq, df, p (SAP A3)
#   cox.csv         coxph(ties = "efron"): coef, se, HR, Wald CI and p per non-reference level (SAP A5)
#   zph.csv         cox.zph(transform = "km"): chisq, df, p per term and GLOBAL
#
# Rules shared with vigil.analysis (documented in docs/analysis-methods.md):
#   - a stratum's levels are those of the SAP; levels without patients give no curve and no coefficient;
#   - Cox: patients in a level with no event are left out of the model (the limit of the MLE as that
#     level's coefficient goes to -Inf); a variable is in the model if two or more of its levels have
#     events; its coefficients are reported only when its reference level has events;
#   - log-rank needs two or more levels with patients and at least one event.

suppressPackageStartupMessages(library(survival))

args <- commandArgs(trailingOnly = TRUE)
root <- if (length(args) >= 1) args[1] else "tests/reference"
datasets <- if (length(args) >= 2) args[-1] else c("ordinary", "few_events")

DAYS <- c(30, 180, 365, 730, 1095, 1825)
source(file.path(root, "sap_levels.R"))  # SAP_LEVELS, STRATIFIERS, MULTIVARIABLE, levels_of

write_out <- function(frame, dir, name) {
  # 17 significant digits: the CSV carries every bit of the double
  for (col in names(frame)) if (is.double(frame[[col]])) frame[[col]] <- sprintf("%.17g", frame[[col]])
  frame[frame == "NA"] <- NA
  path <- file.path(dir, name)
  con <- if (grepl("[.]gz$", name)) gzfile(path, "w") else file(path, "w")
  write.csv(frame, con, row.names = FALSE, na = "")
  close(con)
}


strata_list <- function(d) {
  out <- list(list(stratifier = "overall", stratum = "all", rows = rep(TRUE, nrow(d))))
  for (v in STRATIFIERS) for (lv in levels_of(d, v)) {
    out[[length(out) + 1]] <- list(stratifier = v, stratum = lv, rows = d[[v]] == lv)
  }
  out
}

poisson_ci <- function(k, py) {
  lower <- ifelse(k == 0, 0, qchisq(0.025, 2 * k) / 2 / py)
  upper <- qchisq(0.975, 2 * k + 2) / 2 / py
  data.frame(lower = lower, upper = upper)
}

incidence <- function(d) {
  rows <- list()
  for (s in strata_list(d)) {
    sub <- d[s$rows, ]
    for (outcome in c("first_serious", "all_serious")) {
      k <- if (outcome == "first_serious") sum(sub$status == 1) else sum(sub$n_serious)
      py <- if (outcome == "first_serious") sum(sub$t) / 365.25 else sum(sub$t_followup) / 365.25
      ci <- if (py > 0) poisson_ci(k, py) else data.frame(lower = NA_real_, upper = NA_real_)
      rows[[length(rows) + 1]] <- data.frame(
        outcome = outcome, stratifier = s$stratifier, stratum = s$stratum, n_patients = nrow(sub),
        n_events = k, person_years = py, rate_per_1000py = if (py > 0) 1000 * k / py else NA_real_,
        ci_lower = 1000 * ci$lower, ci_upper = 1000 * ci$upper)
    }
  }
  do.call(rbind, rows)
}

poisson_grid <- function() {
  grid <- expand.grid(k = c(0, 1, 2, 3, 4, 5, 10, 37, 100, 1000, 25000), person_years = c(0.5, 12.25, 1000, 123456.75))
  cbind(grid, poisson_ci(grid$k, grid$person_years))
}

kaplan_meier <- function(d) {
  days <- list(); curve <- list()
  for (s in strata_list(d)) {
    sub <- d[s$rows, ]
    if (nrow(sub) == 0) next
    fit <- survfit(Surv(t, status == 1) ~ 1, data = sub, conf.type = "log-log")
    curve[[length(curve) + 1]] <- data.frame(
      stratifier = s$stratifier, stratum = s$stratum, time = fit$time, estimate = 1 - fit$surv,
      ci_lower = 1 - fit$upper, ci_upper = 1 - fit$lower, std_err = fit$std.err,
      n_at_risk = fit$n.risk, n_events = fit$n.event)
    sm <- summary(fit, times = DAYS, extend = FALSE)
    if (length(sm$time) > 0) days[[length(days) + 1]] <- data.frame(
      stratifier = s$stratifier, stratum = s$stratum, day = sm$time, estimate = 1 - sm$surv,
      ci_lower = 1 - sm$upper, ci_upper = 1 - sm$lower, n_at_risk = sm$n.risk)
  }
  list(days = do.call(rbind, days), curve = do.call(rbind, curve))
}

aalen_johansen <- function(d) {
  days <- list(); curve <- list()
  for (s in strata_list(d)) {
    sub <- d[s$rows, ]
    if (nrow(sub) == 0) next
    sub$state <- factor(sub$status, levels = 0:2, labels = c("censor", "event", "death"))
    fit <- survfit(Surv(t, state) ~ 1, data = sub)
    j <- match("event", fit$states)
    curve[[length(curve) + 1]] <- data.frame(
      stratifier = s$stratifier, stratum = s$stratum, time = fit$time, estimate = fit$pstate[, j],
      ci_lower = fit$lower[, j], ci_upper = fit$upper[, j], std_err = fit$std.err[, j],
      n_at_risk = fit$n.risk[, 1], n_events = fit$n.event[, j])
    sm <- summary(fit, times = DAYS, extend = FALSE)
    if (length(sm$time) > 0) days[[length(days) + 1]] <- data.frame(
      stratifier = s$stratifier, stratum = s$stratum, day = sm$time, estimate = sm$pstate[, j],
      ci_lower = sm$lower[, j], ci_upper = sm$upper[, j], n_at_risk = sm$n.risk[, 1])
  }
  list(days = do.call(rbind, days), curve = do.call(rbind, curve))
}

logrank <- function(d) {
  rows <- list()
  for (v in STRATIFIERS) {
    if (length(unique(d[[v]])) < 2 || sum(d$status == 1) == 0) next
    fit <- survdiff(Surv(t, status == 1) ~ g, data = data.frame(t = d$t, status = d$status, g = d[[v]]))
    df <- sum(fit$exp > 0) - 1
    rows[[length(rows) + 1]] <- data.frame(stratifier = v, chisq = fit$chisq, df = df,
                                           p_value = pchisq(fit$chisq, df, lower.tail = FALSE))
  }
  do.call(rbind, rows)
}

cox_model <- function(d, vars, model) {
  event <- d$status == 1
  keep <- rep(TRUE, nrow(d))
  with_events <- list()
  for (v in vars) {
    lv <- levels_of(d, v)
    with_events[[v]] <- lv[lv %in% d[[v]][event]]
    keep <- keep & d[[v]] %in% with_events[[v]]
  }
  in_model <- vars[sapply(vars, function(v) length(with_events[[v]]) >= 2)]
  if (length(in_model) == 0) return(NULL)
  dm <- d[keep, ]
  for (v in in_model) dm[[v]] <- factor(dm[[v]], levels = with_events[[v]])
  fit <- coxph(as.formula(paste("Surv(t, status == 1) ~", paste(in_model, collapse = " + "))),
               data = dm, ties = "efron")
  cf <- summary(fit)$coefficients
  z <- qnorm(0.975)
  coefs <- list()
  for (v in in_model) {
    if (with_events[[v]][1] != levels_of(d, v)[1]) next  # the reference level has no event
    for (lv in with_events[[v]][-1]) {
      name <- paste0(v, lv)
      coefs[[length(coefs) + 1]] <- data.frame(
        model = model, variable = v, level = lv, n_patients = nrow(dm), n_events = sum(dm$status == 1),
        coef = cf[name, "coef"], se = cf[name, "se(coef)"], hr = exp(cf[name, "coef"]),
        ci_lower = exp(cf[name, "coef"] - z * cf[name, "se(coef)"]),
        ci_upper = exp(cf[name, "coef"] + z * cf[name, "se(coef)"]),
        p_value = 2 * pnorm(-abs(cf[name, "coef"] / cf[name, "se(coef)"])))
    }
  }
  zph <- cox.zph(fit)  # transform = "km", the default
  tab <- zph$table
  list(coef = do.call(rbind, coefs),
       zph = data.frame(model = model, term = rownames(tab), chisq = tab[, "chisq"], df = tab[, "df"],
                        p_value = tab[, "p"]))
}

cox <- function(d) {
  coefs <- list(); zph <- list()
  models <- c(lapply(STRATIFIERS, function(v) list(vars = v, model = paste0("univariable:", v))),
              list(list(vars = MULTIVARIABLE, model = "multivariable")))
  for (m in models) {
    r <- cox_model(d, m$vars, m$model)
    if (is.null(r)) next
    coefs[[length(coefs) + 1]] <- r$coef
    zph[[length(zph) + 1]] <- r$zph
  }
  list(coef = do.call(rbind, coefs), zph = do.call(rbind, zph))
}

for (name in datasets) {
  d <- read_patients(root, name)
  out <- file.path(root, "expected", name)
  dir.create(out, recursive = TRUE, showWarnings = FALSE)
  write_out(incidence(d), out, "incidence.csv")
  write_out(poisson_grid(), out, "poisson.csv")
  km <- kaplan_meier(d)
  write_out(km$days, out, "km_days.csv")
  write_out(km$curve, out, "km_curve.csv.gz")
  aj <- aalen_johansen(d)
  write_out(aj$days, out, "aj_days.csv")
  write_out(aj$curve, out, "aj_curve.csv.gz")
  write_out(logrank(d), out, "logrank.csv")
  cx <- cox(d)
  write_out(cx$coef, out, "cox.csv")
  write_out(cx$zph, out, "zph.csv")
  cat(name, ": ", nrow(d), " patients\n", sep = "")
}
write.csv(data.frame(r = R.version.string, survival = as.character(packageVersion("survival"))),
          file.path(root, "expected", "versions.csv"), row.names = FALSE)

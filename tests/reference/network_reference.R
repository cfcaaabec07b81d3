# Expected values for vigil.stats.meta (SAP v1.1 section 8: P1, P2 and likelihood-profile pooling),
# computed with R's metafor and survival packages, independently of the code under test.
#
# Usage (from the project root):  Rscript tests/reference/network_reference.R tests/reference
# Reads  <root>/data/{ordinary,few_events,edge_cases}.csv (one row per patient, a `site` column: the
#        network's sites; make_datasets.py, make_v11_datasets.py) and <root>/data/network_meta_cases.csv
#        (make_network_datasets.py)
# Writes <root>/expected/network_*.csv, every double with 17 significant digits (NA as an empty cell),
#        and network_versions.csv.
# Needs Debian's r-base-core and r-cran-survival, and metafor (3.8-1 here).
#
# A site's data: its patients; events = status 1 (a death, status 2, is not an event); person-years =
# sum(t) / 365.25 over all its patients.
#
#   network_site_rates.csv  P1 input per dataset x site: events, person_years; yi, vi of
#                           escalc(measure = "IRLN", xi = events, ti = person_years) (NA with no event)
#                           and in_random = events >= 5 (SAP 8 P1: the sites of the random-effects model).
#   network_rate_fixed.csv  P1 fixed effect per dataset, all sites: sum(events) / sum(person_years) per
#                           person-year with poisson.test(sum(events), sum(person_years))$conf.int (exact).
#   network_rate_meta.csv   P1 per dataset x method (EE, DL): rma(yi, vi, method =) on the escalc IRLN
#                           rows of the sites with >= 5 events. Columns of every meta-analysis row:
#                           k, estimate (fit$b), se, z (zval), p_value (pval), ci_lower, ci_upper (ci.lb,
#                           ci.ub), tau2, q (QE), q_df (k - 1), q_p_value (QEp), i2 (I2), h2 (H2) and
#                           typical_variance (fit$vt: metafor's "typical" within-study variance of I2).
#   network_meta_cases.csv  rma(yi, vi, method =) EE and DL on each case of data/network_meta_cases.csv.
#   network_site_hr.csv     P2 input per dataset (ordinary, edge_cases) x site x non-reference SAP level of
#                           the A5 multivariable model, fitted per site as the project fits it
#                           (analysis_v11_reference.R's cox_a5: patients of a level without events left
#                           out; a variable in the model when two or more of its levels have events; factor
#                           levels = those with events, SAP order): coxph(Surv(t, status == 1) ~ X, ties =
#                           "efron"), X = model.matrix of those factors; coef, se = sqrt(diag(fit$var)), NA
#                           with a reason (no patients / no events / reference / not in the model / no
#                           model / aliased, as analysis_v11_reference.R).
#   network_hr_meta.csv     P2 per dataset x level x method (EE, DL): rma(yi = coef, sei = se, method =)
#                           over the sites with a coefficient (k >= 1); no row for a level no site has.
#   network_profile.csv     per profiled coefficient (dataset, column) x site x grid value b: the site's
#                           profile partial log-likelihood, the loglik of coxph(Surv(t, status == 1) ~
#                           X[, -j] + offset(b * X[, j]), ties = "efron") (the other coefficients maximised;
#                           fit$loglik, the same scale as coxph's loglik of the full model).
#   network_profile_ci.csv  per profiled coefficient x (each site, and "pooled"): the maximum of the
#                           profile (site: coxph's coef of the site's full model; pooled: the shared
#                           coefficient of the site-stratified model in which the column is shared and
#                           every other column is the site's own, coxph(... + strata(site)) on the stacked
#                           design, whose partial likelihood is the sum of the sites'), its log-likelihood,
#                           and the 95% profile-likelihood limits: uniroot (tol 1e-12) of the exact summed
#                           profile (each term a coxph fit with the offset) minus (max - qchisq(0.95, 1)/2).
#                           No grid is used here: the Python side interpolates its grid, R does not.
#   network_rate_profile.csv  per dataset: the pooled Poisson profile (sum of the sites' events * theta -
#                           person_years * exp(theta), theta = log rate per person-year): maximum
#                           log(sum(events) / sum(person_years)) and the limits by uniroot, as above.
#
# Cox fits use coxph.control(eps = 1e-11, iter.max = 100) (the default eps = 1e-9 leaves ~1e-9 in the
# coefficients; the profile's limits are found to 1e-12).

suppressPackageStartupMessages({
  library(survival)
  library(metafor)
})

args <- commandArgs(trailingOnly = TRUE)
root <- if (length(args) >= 1) args[1] else "tests/reference"
out <- file.path(root, "expected")
dir.create(out, recursive = TRUE, showWarnings = FALSE)
source(file.path(root, "sap_levels.R"))  # SAP_LEVELS, MULTIVARIABLE, read_patients

MIN_EVENTS <- 5                        # SAP 8 P1: sites in the random-effects model
HALF_CHISQ <- qchisq(0.95, 1) / 2      # 1.9207...: the profile-likelihood 95% limits
CONTROL <- coxph.control(eps = 1e-11, iter.max = 100)  # eps above toler.chol (1.8e-12), or R warns
PER_YEAR <- 365.25
DATASETS <- c("ordinary", "few_events", "edge_cases")
HR_DATASETS <- c("ordinary", "edge_cases")   # few_events: 4-13 events per site for 8-13 columns
# the profiled coefficients: one column each, with events in both of its levels at every site with a model
PROFILES <- list(
  list(dataset = "ordinary", column = "prior_high_efficacyY"),
  list(dataset = "ordinary", column = "edss>=6.0"),
  list(dataset = "edge_cases", column = "prior_high_efficacyY")
)
GRID <- round(seq(-0.6, 1.8, by = 0.05), 10)   # common to every site; holds every limit below

write_out <- function(frame, name) {
  # 17 significant digits: the CSV carries every bit of the double; NA and NaN as empty cells
  for (col in names(frame)) if (is.double(frame[[col]])) {
    frame[[col]] <- ifelse(is.na(frame[[col]]), NA, sprintf("%.17g", frame[[col]]))
  }
  write.csv(frame, file.path(out, paste0("network_", name)), row.names = FALSE, na = "")
}

meta_row <- function(fit) {
  data.frame(method = fit$method, k = fit$k, estimate = as.numeric(fit$b), se = fit$se, z = fit$zval,
             p_value = fit$pval, ci_lower = fit$ci.lb, ci_upper = fit$ci.ub, tau2 = fit$tau2, q = fit$QE,
             q_df = as.integer(fit$k - fit$p), q_p_value = fit$QEp, i2 = fit$I2, h2 = fit$H2,
             typical_variance = fit$vt, stringsAsFactors = FALSE)
}

both_methods <- function(key, ...) {
  do.call(rbind, lapply(c("EE", "DL"), function(m) cbind(key, meta_row(rma(..., method = m)))))
}

# ---------------------------------------------------------------------------------- P1

site_rates <- list(); rate_fixed <- list(); rate_meta <- list(); rate_profile <- list()
for (name in DATASETS) {
  d <- read_patients(root, name)
  sites <- sort(unique(d$site))
  events <- sapply(sites, function(s) sum(d$status[d$site == s] == 1))
  py <- sapply(sites, function(s) sum(d$t[d$site == s]) / PER_YEAR)
  es <- escalc(measure = "IRLN", xi = events[events > 0], ti = py[events > 0])
  yi <- vi <- rep(NA_real_, length(sites))
  yi[events > 0] <- as.numeric(es$yi); vi[events > 0] <- as.numeric(es$vi)
  site_rates[[name]] <- data.frame(dataset = name, site = sites, events = as.integer(events), person_years = py,
                                   yi = yi, vi = vi, in_random = events >= MIN_EVENTS, stringsAsFactors = FALSE)
  ci <- poisson.test(sum(events), sum(py))$conf.int
  rate_fixed[[name]] <- data.frame(dataset = name, k = length(sites), events = as.integer(sum(events)),
                                   person_years = sum(py), rate = sum(events) / sum(py), ci_lower = ci[1],
                                   ci_upper = ci[2], stringsAsFactors = FALSE)
  keep <- events >= MIN_EVENTS
  es <- escalc(measure = "IRLN", xi = events[keep], ti = py[keep])
  rate_meta[[name]] <- both_methods(data.frame(dataset = name, sites = paste(sites[keep], collapse = " ")),
                                    yi = es$yi, vi = es$vi)
  # the pooled Poisson profile, exactly: E theta - PY exp(theta)
  total_e <- sum(events); total_py <- sum(py)
  f <- function(theta) total_e * theta - total_py * exp(theta)
  top <- log(total_e / total_py)
  g <- function(theta) f(theta) - (f(top) - HALF_CHISQ)
  rate_profile[[name]] <- data.frame(
    dataset = name, events = as.integer(total_e), person_years = total_py, estimate = top,
    ci_lower = uniroot(g, c(top - 5, top), tol = 1e-12)$root, ci_upper = uniroot(g, c(top, top + 5), tol = 1e-12)$root,
    stringsAsFactors = FALSE)
}
write_out(do.call(rbind, site_rates), "site_rates.csv")
write_out(do.call(rbind, rate_fixed), "rate_fixed.csv")
write_out(do.call(rbind, rate_meta), "rate_meta.csv")
write_out(do.call(rbind, rate_profile), "rate_profile.csv")

cases <- read.csv(file.path(root, "data", "network_meta_cases.csv"), colClasses = c("character", "character",
                                                                                   "numeric", "numeric"))
meta_cases <- do.call(rbind, lapply(unique(cases$case), function(cs) {
  r <- cases[cases$case == cs, ]
  both_methods(data.frame(case = cs), yi = r$yi, vi = r$vi)
}))
write_out(meta_cases, "meta_cases.csv")

# ---------------------------------------------------------------------------------- P2

a5_design <- function(d) {
  # the site's A5 multivariable design as the project builds it (analysis_v11_reference.R's cox_a5)
  event <- d$status == 1
  info <- list()
  keep <- rep(TRUE, nrow(d))
  for (v in MULTIVARIABLE) {
    lv <- SAP_LEVELS[[v]]
    info[[v]] <- list(levels = lv, present = lv[lv %in% d[[v]]], with_events = lv[lv %in% d[[v]][event]])
    keep <- keep & d[[v]] %in% info[[v]]$with_events
  }
  in_model <- MULTIVARIABLE[sapply(MULTIVARIABLE, function(v) length(info[[v]]$with_events) >= 2)]
  no_model <- if (!any(event)) "no model: no events"
    else if (length(in_model) == 0) "no model: no variable with events in two or more levels"
    else NA_character_
  X <- NULL
  dm <- d[keep, ]
  if (is.na(no_model)) {
    for (v in in_model) dm[[v]] <- factor(dm[[v]], levels = info[[v]]$with_events)
    X <- model.matrix(as.formula(paste("~", paste(in_model, collapse = " + "))), dm)[, -1, drop = FALSE]
  }
  list(time = as.numeric(dm$t), event = dm$status == 1, X = X, info = info, in_model = in_model,
       no_model = no_model, any_event = any(event))
}

fit_cox <- function(time, event, X) {
  fit <- coxph(Surv(time, event) ~ X, ties = "efron", control = CONTROL)
  names(fit$coefficients) <- colnames(X)
  fit
}

site_hr <- list()
for (name in HR_DATASETS) {
  d <- read_patients(root, name)
  for (s in sort(unique(d$site))) {
    m <- a5_design(d[d$site == s, ])
    fit <- if (is.na(m$no_model)) fit_cox(m$time, m$event, m$X) else NULL
    b <- if (is.null(fit)) NULL else coef(fit)
    for (v in MULTIVARIABLE) {
      info <- m$info[[v]]
      for (lv in info$levels[-1]) {
        column <- paste0(v, lv)
        reason <- if (!m$any_event) m$no_model
          else if (!(lv %in% info$present)) "no patients"
          else if (!(lv %in% info$with_events)) "no events"
          else if (!(info$levels[1] %in% info$with_events)) "reference"
          else if (!(v %in% m$in_model)) "not in the model"
          else if (!is.na(m$no_model)) m$no_model
          else if (is.na(b[column])) "aliased"
          else NA_character_
        coef <- se <- NA_real_
        if (is.na(reason)) {
          coef <- unname(b[column])
          se <- sqrt(fit$var[match(column, names(b)), match(column, names(b))])
        }
        site_hr[[length(site_hr) + 1]] <- data.frame(dataset = name, site = s, variable = v, level = lv,
                                                     coef = coef, se = se, reason = reason, stringsAsFactors = FALSE)
      }
    }
  }
}
site_hr <- do.call(rbind, site_hr)
write_out(site_hr, "site_hr.csv")

hr_meta <- list()
for (name in HR_DATASETS) for (v in MULTIVARIABLE) for (lv in SAP_LEVELS[[v]][-1]) {
  r <- site_hr[site_hr$dataset == name & site_hr$variable == v & site_hr$level == lv & !is.na(site_hr$coef), ]
  if (nrow(r) == 0) next
  hr_meta[[length(hr_meta) + 1]] <- both_methods(
    data.frame(dataset = name, variable = v, level = lv, sites = paste(r$site, collapse = " "),
               stringsAsFactors = FALSE), yi = r$coef, sei = r$se)
}
write_out(do.call(rbind, hr_meta), "hr_meta.csv")

# ---------------------------------------------------------------------------------- profile pooling

profile_loglik <- function(m, j, b) {
  # the site's partial log-likelihood at coefficient b of column j, the others maximised
  off <- b * m$X[, j]
  others <- m$X[, -j, drop = FALSE]
  fit <- if (ncol(others) > 0) coxph(Surv(m$time, m$event) ~ others + offset(off), ties = "efron", control = CONTROL)
    else coxph(Surv(m$time, m$event) ~ offset(off), ties = "efron")
  tail(fit$loglik, 1)
}

limits <- function(f, top, f_top, se) {
  # where the curve is HALF_CHISQ below its maximum, each side (the profile is concave)
  g <- function(b) f(b) - (f_top - HALF_CHISQ)
  c(uniroot(g, c(top - 10 * se, top), tol = 1e-12)$root, uniroot(g, c(top, top + 10 * se), tol = 1e-12)$root)
}

profile_rows <- list(); profile_ci <- list()
for (p in PROFILES) {
  d <- read_patients(root, p$dataset)
  models <- list()
  for (s in sort(unique(d$site))) {
    m <- a5_design(d[d$site == s, ])
    if (is.na(m$no_model)) models[[s]] <- m
  }
  key <- data.frame(dataset = p$dataset, column = p$column, stringsAsFactors = FALSE)
  for (s in names(models)) {
    m <- models[[s]]
    j <- match(p$column, colnames(m$X))
    stopifnot(!is.na(j))
    fit <- fit_cox(m$time, m$event, m$X)
    stopifnot(!anyNA(coef(fit)))
    f <- function(b) profile_loglik(m, j, b)
    top <- unname(coef(fit)[j])
    lim <- limits(f, top, fit$loglik[2], sqrt(fit$var[j, j]))
    profile_ci[[length(profile_ci) + 1]] <- cbind(key, data.frame(
      site = s, estimate = top, loglik = fit$loglik[2], ci_lower = lim[1], ci_upper = lim[2]))
    profile_rows[[length(profile_rows) + 1]] <- cbind(key, data.frame(
      site = s, b = GRID, loglik = sapply(GRID, f)))
    stopifnot(abs(f(top) - fit$loglik[2]) < 1e-8)
  }
  # pooled: the shared column, each site's other columns its own, a baseline hazard per site
  widths <- sapply(models, function(m) ncol(m$X) - 1)
  offsets <- cumsum(c(0, widths))
  blocks <- lapply(seq_along(models), function(i) {
    m <- models[[i]]
    j <- match(p$column, colnames(m$X))
    Z <- matrix(0, nrow(m$X), sum(widths))
    if (widths[i] > 0) Z[, offsets[i] + seq_len(widths[i])] <- m$X[, -j]
    cbind(m$X[, j], Z)
  })
  X <- do.call(rbind, blocks)
  time <- unlist(lapply(models, `[[`, "time")); event <- unlist(lapply(models, `[[`, "event"))
  site <- rep(names(models), sapply(models, function(m) length(m$time)))
  joint <- coxph(Surv(time, event) ~ X + strata(site), ties = "efron", control = CONTROL)
  stopifnot(!anyNA(coef(joint)))
  f <- function(b) sum(sapply(names(models), function(s) {
    m <- models[[s]]
    profile_loglik(m, match(p$column, colnames(m$X)), b)
  }))
  top <- unname(coef(joint)[1])
  stopifnot(abs(f(top) - joint$loglik[2]) < 1e-8)
  lim <- limits(f, top, joint$loglik[2], sqrt(joint$var[1, 1]))
  profile_ci[[length(profile_ci) + 1]] <- cbind(key, data.frame(
    site = "pooled", estimate = top, loglik = joint$loglik[2], ci_lower = lim[1], ci_upper = lim[2]))
}
profile_rows <- do.call(rbind, profile_rows)
profile_ci <- do.call(rbind, profile_ci)
# every limit inside the grid (the Python side interpolates it)
stopifnot(all(profile_ci$ci_lower > min(GRID) + 0.1), all(profile_ci$ci_upper < max(GRID) - 0.1))
write_out(profile_rows, "profile.csv")
write_out(profile_ci, "profile_ci.csv")

write.csv(data.frame(r = R.version.string, survival = as.character(packageVersion("survival")),
                     metafor = as.character(packageVersion("metafor"))),
          file.path(out, "network_versions.csv"), row.names = FALSE)
cat("network: ", nrow(do.call(rbind, site_rates)), " site rates, ", nrow(site_hr), " site HR rows, ",
    length(hr_meta), " pooled levels, ", nrow(profile_rows), " profile points\n", sep = "")

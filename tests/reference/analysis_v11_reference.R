# Expected values for SAP v1.1 A8-A11, and the A5 extras (the site-stratified Cox model, per-model fit
# statistics and per-variable tests), as vigil.analysis.sap.run_analyses computes them on the
# reference datasets, computed with R (stats, survival, MASS, cmprsk, epitools).
#
# Usage (from the project root):  Rscript tests/reference/analysis_v11_reference.R tests/reference
# Reads  <root>/data/<dataset>.csv   (ordinary, few_events: written by tests/reference/make_datasets.py;
#        edge_cases: by tests/reference/make_v11_datasets.py)
# Writes <root>/expected/<dataset>/{incidence_proportion,rate_ratios,fine_gray,standardised_rates}.csv,
#        <root>/expected/<dataset>/{cox_site_stratified,cox_models,cox_tests}.csv
#        and <root>/expected/<dataset>/versions_v11.csv
# Needs Debian's r-base-core, r-cran-survival, r-cran-cmprsk, r-cran-mass and r-cran-epitools.
#
# The inputs are rebuilt here from the CSV exactly as tests/analysis_data.py loads them for the
# pipeline (first_serious = the dataset: t, status 0 censored / 1 event / 2 death; all_serious =
# t_followup, n_serious), and tests/test_analysis_reference_v11.py compares run_analyses' results
# tables with these files at 1e-6. Every stratum level of the SAP (site: the data's, alphabetical)
# has its rows, levels without patients too.
#
#   incidence_proportion.csv  A8: for D in 365, 730, 1825, overall and per stratum: n_cases = status 1
#                             and t <= D; n_denominator = everyone but those censored alive before D
#                             (status 0, t < D); proportion and binom.test(n_cases, n_denominator)$conf.int.
#                             NA when the denominator is 0.
#   rate_ratios.csv           A9: the risk windows as analysis_data.py builds them (one course per
#                             patient; follow-up days 1..t_followup cut at 1-31, 32-91, 92-366, 367+;
#                             the n_serious episodes in the window holding day ceiling(t_followup / 2)),
#                             aggregated by window x the A5 multivariable covariates (episodes, days;
#                             person-years = days / 365.25). glm(n ~ window [+ covariates] +
#                             offset(log(py)), family = poisson) and MASS::glm.nb(same), window
#                             reference ">365", the SAP reference levels (sap_levels.R). The design is
#                             model.matrix over every SAP level, given to glm as a matrix: a level
#                             without rows is a column of zeros, NA in R (glm's own model frame would
#                             drop it, and stop on a factor left with one level, as sex in few_events).
#                             Per coefficient: coef, se, rate
#                             ratio, Wald CI exp(coef -+ qnorm(0.975) se), Wald p; per fit: Pearson
#                             dispersion sum(residuals(fit, "pearson")^2) / df.residual, theta (glm.nb),
#                             rows, episodes, person-years, converged and R's warnings.
#   fine_gray.csv             A10: cmprsk::crr(t, status, model.matrix(~ covariates)[, -1]) (failcode 1,
#                             cencode 0, crr's defaults) univariable per stratum variable (site too) and
#                             the A5 multivariable model: coef, se = sqrt(diag(var)), sHR, Wald CI, p.
#   standardised_rates.csv    A11: epitools::ageadjust.direct(count, pop, stdpop) of first_serious per
#                             stratum of each stratifier but age_group and sex, plus overall, over the
#                             age_group x sex cells where the stratum has person-time (count, pop and
#                             stdpop all without the other cells); stdpop = the cohort's person-years
#                             in those cells. Rates per 1,000 person-years.
#
# A5 (results.cox of model multivariable_site_stratified, results.cox_models, results.cox_tests), for
# first_serious and first_opportunistic (as tests/analysis_data.py: the dataset again in ordinary and
# edge_cases; every event censored in few_events, an outcome without events). Each model is fitted as
# survival_reference.R fits results.cox: coxph(Surv(t, status == 1) ~ ..., ties = "efron") with coxph's
# default control; patients of a level without events left out, a variable in the model when two or more
# of its levels have events, factors over those levels in SAP order; + strata(site) for
# multivariable_site_stratified.
# (With coxph.control(eps = 1e-12, iter.max = 100) every value below moves by 3e-9 at most: not needed.)
#   cox_site_stratified.csv   the multivariable model (A5 covariates) + strata(site): per non-reference SAP
#                             level coef, se = sqrt(diag(fit$var)), HR, Wald CI exp(coef -+ qnorm(0.975) se),
#                             Wald p; cox.zph(fit) (transform "km") chisq, df, p of the level's term on
#                             every row of a variable in the model, and a GLOBAL row (level NA) with the
#                             global test; n_patients = fit$n, n_events = fit$nevent.
#   cox_models.csv            per outcome and model (univariable per stratifier, multivariable,
#                             multivariable_site_stratified): fit$loglik[2] (loglik), fit$loglik[1]
#                             (loglik_null), AIC(fit), fit$concordance["concordance"] and ["std"]
#                             (= sqrt of its variance), fit$n, fit$nevent, fit$iter (iterations: not compared).
#   cox_tests.csv             per variable of the multivariable and the site-stratified model: the Wald
#                             chi-square of survival:::coxph.wtest on the variable's non-NA coefficients and
#                             their block of fit$var (df = their number, p = pchisq upper tail), and drop1(fit,
#                             test = "Chisq")'s LRT, Df and Pr(>Chi) of the variable (the strata(site) row of
#                             the stratified model is not used).
#   A5 reasons: no patients / no events (the level; its patients are left out of the model) / reference
#   (the variable's SAP reference level has no patients or no events: its HRs are infinite) / not in the
#   model (fewer than two levels with events) / aliased (R's coefficient NA) / no model: no events, or no
#   model: no variable with events in two or more levels (then n_patients is the model's patients, or
#   every patient when the outcome has no events, as the pipeline counts them).
#
# `reason` says why a value is NA (the pipeline must give NULL there, with a note):
#   no patients   the level (or the stratum) has no patients / rows;
#   aliased       A9: R's coefficient is NA (a column of zeros or a linear combination of others);
#                 A10: the column is a linear combination of the others over the risk sets;
#   no events     the level has patients but no event (A9: no episodes in its rows): the MLE is
#                 -Inf. R's glm/glm.nb stop at a large negative value with a huge SE, crr does not
#                 converge; the value is written as NA;
#   reference     the variable's reference level has no event: its coefficients (A9: and the
#                 intercept) are infinite, NA;
#   separated     A9: R left the coefficient at |coef| > 15 with SE > 100 for another reason
#                 (quasi-complete separation by several levels together);
#   failed        the fit stopped with an error (the message follows);
#   no model      A10: no event, or no column left.
# The other coefficients of a fit with a level without events:
#   A9   the fit on all rows as R leaves it; the diverging coefficient has gone so far (about -20 to
#        -40) that the other coefficients are the limit of the MLE to ~1e-8 (vigil.stats.glm fits
#        that limit: the model without those rows, residual df and theta.ml's start as R's);
#   A10  crr does not get there in 10 iterations: as in finegray_reference.R, the patients of levels
#        without events get one extra column started at init = -20 (their weight in the risk sets
#        2e-9 of the others'; they stay in the censoring Kaplan-Meier), which is crr's model in the
#        limit to ~1e-9.
# A11: with no event in the stratum ageadjust.direct's lower limit is NaN (gamma shape 0/0), written
# as NA; the pipeline gives 0 there by design (vigil.stats.rates, note "R's ageadjust.direct gives NaN").

suppressPackageStartupMessages({
  library(survival)
  library(MASS)
  library(cmprsk)
  library(epitools)
})

args <- commandArgs(trailingOnly = TRUE)
root <- if (length(args) >= 1) args[1] else "tests/reference"
datasets <- if (length(args) >= 2) args[-1] else c("ordinary", "few_events", "edge_cases")

source(file.path(root, "sap_levels.R"))  # SAP_LEVELS, STRATIFIERS, MULTIVARIABLE, levels_of

PROPORTION_DAYS <- c(365, 730, 1825)
WINDOWS <- data.frame(window = c("0-30", "31-90", "91-365", ">365"), first_day = c(1, 32, 92, 367),
                      last_day = c(31, 91, 366, 1e6), stringsAsFactors = FALSE)
WINDOW_LEVELS <- c(">365", "0-30", "31-90", "91-365")   # reference first
STANDARD <- c("age_group", "sex")
PER <- 1000
source(file.path(root, "crr_limit.R"))  # crr_design, MASK_INIT, ALIAS_TOLERANCE
z975 <- qnorm(0.975)

write_out <- function(frame, dir, name) {
  # 17 significant digits: the CSV carries every bit of the double; NA and NaN as empty cells
  for (col in names(frame)) if (is.double(frame[[col]])) {
    frame[[col]] <- ifelse(is.na(frame[[col]]), NA, sprintf("%.17g", frame[[col]]))
  }
  write.csv(frame, file.path(dir, name), row.names = FALSE, na = "")
}

capture <- function(expr) {
  # the value (or the error message) and R's warnings
  warns <- character()
  value <- tryCatch(withCallingHandlers(expr, warning = function(w) {
    warns <<- c(warns, conditionMessage(w))
    invokeRestart("muffleWarning")
  }), error = function(e) structure(conditionMessage(e), class = "fit_error"))
  list(value = value, warnings = paste(unique(warns), collapse = "; "))
}

strata_list <- function(d, stratifiers = STRATIFIERS) {
  out <- list(list(stratifier = "overall", stratum = "all", rows = rep(TRUE, nrow(d))))
  for (v in stratifiers) for (lv in levels_of(d, v)) {
    out[[length(out) + 1]] <- list(stratifier = v, stratum = lv, rows = d[[v]] == lv)
  }
  out
}

# ---------------------------------------------------------------------------------- A8

incidence_proportion <- function(d) {
  rows <- list()
  for (s in strata_list(d)) {
    sub <- d[s$rows, ]
    for (day in PROPORTION_DAYS) {
      k <- sum(sub$status == 1 & sub$t <= day)
      censored <- sum(sub$status == 0 & sub$t < day)
      n <- nrow(sub) - censored
      ci <- if (n > 0) binom.test(k, n)$conf.int else c(NA_real_, NA_real_)
      rows[[length(rows) + 1]] <- data.frame(
        stratifier = s$stratifier, stratum = s$stratum, day = day, n_cases = k, n_denominator = n,
        n_censored_before = censored, proportion = if (n > 0) k / n else NA_real_,
        ci_lower = ci[1], ci_upper = ci[2], reason = if (n > 0) NA_character_ else "no patients")
    }
  }
  do.call(rbind, rows)
}

# ---------------------------------------------------------------------------------- A9

risk_windows <- function(d) {
  # one course per patient, as tests/analysis_data.py
  half <- ceiling(d$t_followup / 2)
  parts <- list()
  for (i in seq_len(nrow(WINDOWS))) {
    w <- WINDOWS[i, ]
    on <- d$t_followup >= w$first_day
    sub <- d[on, ]
    parts[[i]] <- data.frame(
      sub[, c("patient_id", MULTIVARIABLE)], window = w$window,
      days = pmin(sub$t_followup, w$last_day) - w$first_day + 1,
      n = ifelse(half[on] >= w$first_day & half[on] <= w$last_day, sub$n_serious, 0),
      stringsAsFactors = FALSE)
  }
  do.call(rbind, parts)
}

aggregated_person_time <- function(d) {
  rw <- risk_windows(d)
  agg <- aggregate(cbind(n, days) ~ ., data = rw[, c("window", MULTIVARIABLE, "n", "days")], FUN = sum)
  agg <- agg[agg$days > 0, ]
  agg$py <- agg$days / 365.25
  agg$window <- factor(agg$window, levels = WINDOW_LEVELS)
  for (v in MULTIVARIABLE) agg[[v]] <- factor(agg[[v]], levels = SAP_LEVELS[[v]])
  agg[do.call(order, lapply(c("window", MULTIVARIABLE), function(v) agg[[v]])), ]
}

glm_rows <- function(agg, vars, model, variance) {
  # the treatment-coded design over every SAP level: glm's model frame would drop the levels without
  # rows (and refuse a factor left with one level), model.matrix keeps them as columns of zeros,
  # which glm reports as NA (aliased)
  X <- model.matrix(as.formula(paste("~", paste(vars, collapse = " + "))), data = agg)
  formula <- n ~ 0 + X + offset(log(py))
  run <- if (variance == "poisson") capture(glm(formula, family = poisson, data = agg))
         else capture(glm.nb(formula, data = agg))
  fit <- run$value
  all_levels <- c(list(window = WINDOW_LEVELS), SAP_LEVELS[MULTIVARIABLE])
  terms <- data.frame(variable = "(Intercept)", level = NA_character_, name = "(Intercept)", stringsAsFactors = FALSE)
  for (v in vars) for (lv in all_levels[[v]][-1]) {
    terms <- rbind(terms, data.frame(variable = v, level = lv, name = paste0(v, lv), stringsAsFactors = FALSE))
  }
  # levels without rows, without episodes; reference levels without episodes
  reason <- rep(NA_character_, nrow(terms))
  for (v in vars) {
    present <- all_levels[[v]][all_levels[[v]] %in% agg[[v]]]
    with_events <- all_levels[[v]][all_levels[[v]] %in% agg[[v]][agg$n > 0]]
    mine <- terms$variable == v
    reason[mine & !(terms$level %in% present)] <- "no patients"
    reason[mine & is.na(reason) & !(terms$level %in% with_events)] <- "no events"
    if (!(all_levels[[v]][1] %in% with_events)) {
      reason[(mine | terms$variable == "(Intercept)") & is.na(reason)] <- "reference"
    }
  }
  coef <- se <- p <- rep(NA_real_, nrow(terms))
  dispersion <- theta <- NA_real_
  converged <- NA
  if (inherits(fit, "fit_error")) {
    reason[is.na(reason)] <- paste("failed:", fit)
  } else {
    est <- coef(fit)
    names(est) <- sub("^X", "", names(est))
    sm <- summary(fit)$coefficients   # rows only for the coefficients R estimated
    rownames(sm) <- sub("^X", "", rownames(sm))
    coef <- unname(est[terms$name])
    ok <- terms$name %in% rownames(sm)
    se[ok] <- sm[terms$name[ok], 2]
    p[ok] <- sm[terms$name[ok], 4]
    reason[is.na(reason) & is.na(coef)] <- "aliased"
    reason[which(is.na(reason) & abs(coef) > 15 & se > 100)] <- "separated"
    coef[!is.na(reason)] <- NA_real_
    se[!is.na(reason)] <- NA_real_
    p[!is.na(reason)] <- NA_real_
    dispersion <- sum(residuals(fit, type = "pearson")^2) / fit$df.residual
    if (variance == "negative_binomial") theta <- fit$theta
    converged <- fit$converged
  }
  data.frame(
    model = model, covariates = paste(vars, collapse = ", "), variance = variance,
    variable = terms$variable, level = terms$level, coef = coef, se = se, rate_ratio = exp(coef),
    ci_lower = exp(coef - z975 * se), ci_upper = exp(coef + z975 * se), p_value = p,
    dispersion = dispersion, theta = theta, n_rows = nrow(agg), n_events = sum(agg$n),
    person_years = sum(agg$py), converged = converged, reason = reason, warnings = run$warnings,
    stringsAsFactors = FALSE)
}

rate_ratios <- function(d) {
  agg <- aggregated_person_time(d)
  rows <- list()
  for (m in list(list(vars = "window", model = "univariable"),
                 list(vars = c("window", MULTIVARIABLE), model = "multivariable"))) {
    for (variance in c("poisson", "negative_binomial")) {
      rows[[length(rows) + 1]] <- glm_rows(agg, m$vars, m$model, variance)
    }
  }
  do.call(rbind, rows)
}

# ---------------------------------------------------------------------------------- A10

fg_model <- function(d, vars, model) {
  event <- d$status == 1
  info <- list()
  masked <- rep(FALSE, nrow(d))
  fitted <- character(0)
  for (v in vars) {
    lv <- levels_of(d, v)
    present <- lv[lv %in% d[[v]]]
    with_events <- lv[lv %in% d[[v]][event]]
    info[[v]] <- list(levels = lv, present = present, with_events = with_events)
    # a variable whose reference level has no patients has nothing to compare with: not in the model
    if (lv[1] %in% present && length(present) > 1) {
      fitted <- c(fitted, v)
      masked <- masked | !(d[[v]] %in% with_events)
    }
  }
  # model.matrix over the levels with events, the first of them the reference; the masked patients'
  # rows are 0 in every column of the variable (their value is replaced by that reference)
  X <- NULL
  if (length(fitted) > 0 && any(event)) {
    dm <- d
    for (v in fitted) {
      value <- ifelse(dm[[v]] %in% info[[v]]$with_events, dm[[v]], info[[v]]$with_events[1])
      dm[[v]] <- factor(value, levels = info[[v]]$with_events)
    }
    keep <- fitted[sapply(fitted, function(v) length(info[[v]]$with_events) > 1)]
    if (length(keep) > 0) {
      X <- model.matrix(as.formula(paste("~", paste(keep, collapse = " + "))), data = dm)[, -1, drop = FALSE]
    }
  }
  aliased <- character(0)
  fit <- NULL
  fit_error <- NA_character_
  if (!is.null(X)) {
    design <- crr_design(d, X, masked)
    aliased <- design$aliased
    if (ncol(design$X) > 0) {
      run <- capture(crr(d$t, d$status, design$X, init = design$init))
      if (inherits(run$value, "fit_error")) fit_error <- run$value else fit <- run$value
    }
  }
  rows <- list()
  for (v in vars) {
    lv_all <- info[[v]]$levels
    for (lv in lv_all[-1]) {
      name <- paste0(v, lv)
      reason <- if (!(lv %in% info[[v]]$present)) "no patients"
        else if (!(lv_all[1] %in% info[[v]]$present)) "no patients"   # in the reference level
        else if (!(lv %in% info[[v]]$with_events)) "no events"
        else if (!(lv_all[1] %in% info[[v]]$with_events)) "reference"
        else if (name %in% aliased) "aliased"
        else if (!is.na(fit_error)) paste("failed:", fit_error)
        else if (is.null(fit)) "no model"
        else NA_character_
      coef <- se <- NA_real_
      if (is.na(reason)) {
        j <- match(name, names(fit$coef))
        coef <- unname(fit$coef[j])
        se <- sqrt(fit$var[j, j])
      }
      rows[[length(rows) + 1]] <- data.frame(
        model = model, covariates = paste(vars, collapse = ", "), variable = v, level = lv,
        coef = coef, se = se, shr = exp(coef), ci_lower = exp(coef - z975 * se),
        ci_upper = exp(coef + z975 * se), p_value = 2 * pnorm(-abs(coef / se)),
        n_patients = nrow(d), n_events = sum(event), n_competing = sum(d$status == 2),
        converged = if (is.null(fit)) NA else fit$converged, reason = reason, stringsAsFactors = FALSE)
    }
  }
  do.call(rbind, rows)
}

fine_gray <- function(d) {
  models <- c(lapply(STRATIFIERS, function(v) list(vars = v, model = "univariable")),
              list(list(vars = MULTIVARIABLE, model = "multivariable")))
  do.call(rbind, lapply(models, function(m) fg_model(d, m$vars, m$model)))
}

# ---------------------------------------------------------------------------------- A11

standardised_rates <- function(d) {
  d$py <- d$t / 365.25
  cells <- expand.grid(sex = SAP_LEVELS$sex, age_group = SAP_LEVELS$age_group,
                       stringsAsFactors = FALSE)[, c("age_group", "sex")]
  key <- paste(cells$age_group, cells$sex)
  cell_sums <- function(sub) {
    k <- paste(sub$age_group, sub$sex)
    data.frame(events = sapply(key, function(x) sum(sub$status[k == x] == 1)),
               py = sapply(key, function(x) sum(sub$py[k == x])), row.names = NULL)
  }
  standard <- cell_sums(d)
  rows <- list()
  for (s in strata_list(d, setdiff(STRATIFIERS, STANDARD))) {
    cs <- cell_sums(d[s$rows, ])
    keep <- cs$py > 0   # SAP A11: cells where the stratum has no person-time are left out
    r <- c(crude.rate = NA_real_, adj.rate = NA_real_, lci = NA_real_, uci = NA_real_)
    warnings <- ""
    reason <- NA_character_
    if (any(keep)) {
      run <- capture(ageadjust.direct(count = cs$events[keep], pop = cs$py[keep], stdpop = standard$py[keep]))
      r <- run$value
      warnings <- run$warnings
      if (is.na(r["lci"])) reason <- "no events: lower limit NaN"
    } else {
      reason <- "no patients"
    }
    rows[[length(rows) + 1]] <- data.frame(
      stratifier = s$stratifier, stratum = s$stratum, n_events = sum(cs$events), person_years = sum(cs$py),
      n_cells = sum(keep), crude_rate = PER * unname(r["crude.rate"]),
      standardised_rate = PER * unname(r["adj.rate"]), ci_lower = PER * unname(r["lci"]),
      ci_upper = PER * unname(r["uci"]), reason = reason, warnings = warnings, stringsAsFactors = FALSE)
  }
  do.call(rbind, rows)
}

# ---------------------------------------------------------------------------------- A5

a5_outcomes <- function(d, name) {
  # as tests/analysis_data.py: first_opportunistic is the dataset again (ordinary, edge_cases) or the
  # dataset with every event censored (few_events: an outcome without events)
  opportunistic <- d
  if (name == "few_events") opportunistic$status[opportunistic$status == 1] <- 0L
  list(first_serious = d, first_opportunistic = opportunistic)
}

cox_a5 <- function(d, vars, model, stratum = NULL) {
  # one A5 model as survival_reference.R fits it: patients of a level without events left out, a
  # variable in the model with two or more levels with events, factors over its levels with events
  # (the SAP order, so the SAP reference when it has events); strata(site) for the stratified model
  event <- d$status == 1
  key <- data.frame(model = model, covariates = paste(vars, collapse = ", "), stringsAsFactors = FALSE)
  info <- list()
  keep <- rep(TRUE, nrow(d))
  for (v in vars) {
    lv <- levels_of(d, v)
    info[[v]] <- list(levels = lv, present = lv[lv %in% d[[v]]], with_events = lv[lv %in% d[[v]][event]])
    keep <- keep & d[[v]] %in% info[[v]]$with_events
  }
  in_model <- vars[sapply(vars, function(v) length(info[[v]]$with_events) >= 2)]
  no_model <- if (!any(event)) "no model: no events"
    else if (length(in_model) == 0) "no model: no variable with events in two or more levels"
    else NA_character_
  dm <- if (any(event)) d[keep, ] else d   # no events: every patient, no model
  fit <- dropped <- NULL
  if (is.na(no_model)) {
    for (v in in_model) dm[[v]] <- factor(dm[[v]], levels = info[[v]]$with_events)
    rhs <- paste(in_model, collapse = " + ")
    if (!is.null(stratum)) rhs <- paste0(rhs, " + strata(", stratum, ")")
    # coxph's default control, as survival_reference.R; the formula's environment is this function's,
    # where drop1's refits find dm
    fit <- coxph(as.formula(paste("Surv(t, status == 1) ~", rhs)), data = dm, ties = "efron")
    dropped <- drop1(fit, test = "Chisq")
  }
  n_patients <- if (is.null(fit)) nrow(dm) else fit$n
  n_events <- if (is.null(fit)) sum(dm$status == 1) else as.integer(fit$nevent)

  cc <- if (is.null(fit)) NULL else fit$concordance
  models <- cbind(key, data.frame(
    loglik = if (is.null(fit)) NA_real_ else fit$loglik[2],
    loglik_null = if (is.null(fit)) NA_real_ else fit$loglik[1],
    aic = if (is.null(fit)) NA_real_ else AIC(fit),
    concordance = if (is.null(fit)) NA_real_ else unname(cc["concordance"]),
    concordance_se = if (is.null(fit)) NA_real_ else unname(cc["std"]),   # = sqrt(var)
    n_patients = n_patients, n_events = n_events, iterations = if (is.null(fit)) NA_integer_ else fit$iter,
    reason = no_model, stringsAsFactors = FALSE))

  b <- if (is.null(fit)) NULL else coef(fit)
  zph <- if (is.null(fit)) NULL else cox.zph(fit)$table   # transform = "km", the default
  coefs <- list()
  tests <- list()
  for (v in vars) {
    lv_all <- info[[v]]$levels
    ph <- if (!is.null(zph) && v %in% in_model) zph[v, ] else c(chisq = NA_real_, df = NA_real_, p = NA_real_)
    for (lv in lv_all[-1]) {
      name <- paste0(v, lv)
      reason <- if (!is.na(no_model) && !any(event)) no_model
        else if (!(lv %in% info[[v]]$present)) "no patients"
        else if (!(lv %in% info[[v]]$with_events)) "no events"
        else if (!(lv_all[1] %in% info[[v]]$with_events)) "reference"   # no patients or no events in it
        else if (!(v %in% in_model)) "not in the model"
        else if (!is.na(no_model)) no_model
        else if (is.na(b[name])) "aliased"
        else NA_character_
      coef <- se <- NA_real_
      if (is.na(reason)) {
        coef <- unname(b[name])
        se <- sqrt(fit$var[match(name, names(b)), match(name, names(b))])
      }
      coefs[[length(coefs) + 1]] <- cbind(key, data.frame(
        variable = v, level = lv, coef = coef, se = se, hr = exp(coef), ci_lower = exp(coef - z975 * se),
        ci_upper = exp(coef + z975 * se), p_value = 2 * pnorm(-abs(coef / se)),
        ph_chisq = unname(ph["chisq"]), ph_df = as.integer(ph["df"]), ph_p_value = unname(ph["p"]),
        n_patients = n_patients, n_events = n_events, reason = reason, stringsAsFactors = FALSE))
    }
    # the joint tests: survival:::coxph.wtest on the term's non-NA coefficients (coxph.wtest itself
    # mishandles NA), drop1's row of the term (the strata(site) row is not used)
    reason <- if (!is.na(no_model) && !any(event)) no_model
      else if (!(v %in% in_model)) "not in the model"
      else if (!is.na(no_model)) no_model
      else NA_character_
    wald <- list(test = NA_real_, df = NA_integer_)
    lr <- c(LRT = NA_real_, Df = NA_real_, p = NA_real_)
    if (is.na(reason)) {
      cols <- fit$assign[[v]]
      ok <- cols[!is.na(b[cols])]
      wald <- if (length(ok)) survival:::coxph.wtest(fit$var[ok, ok, drop = FALSE], b[ok])
        else list(test = NA_real_, df = 0L)
      lr <- c(LRT = dropped[v, "LRT"], Df = dropped[v, "Df"], p = dropped[v, "Pr(>Chi)"])
      if (!length(ok)) reason <- "aliased"
    }
    tests[[length(tests) + 1]] <- cbind(key, data.frame(
      variable = v, wald_chisq = as.double(wald$test), wald_df = as.integer(wald$df),
      wald_p = pchisq(as.double(wald$test), wald$df, lower.tail = FALSE),
      lr_chisq = unname(lr["LRT"]), lr_df = as.integer(lr["Df"]), lr_p = unname(lr["p"]), reason = reason,
      stringsAsFactors = FALSE))
  }
  global <- if (is.null(zph)) c(chisq = NA_real_, df = NA_real_, p = NA_real_) else zph["GLOBAL", ]
  coefs[[length(coefs) + 1]] <- cbind(key, data.frame(
    variable = "GLOBAL", level = NA_character_, coef = NA_real_, se = NA_real_, hr = NA_real_,
    ci_lower = NA_real_, ci_upper = NA_real_, p_value = NA_real_, ph_chisq = unname(global["chisq"]),
    ph_df = as.integer(global["df"]), ph_p_value = unname(global["p"]), n_patients = n_patients,
    n_events = n_events, reason = no_model, stringsAsFactors = FALSE))
  list(models = models, coef = do.call(rbind, coefs), tests = do.call(rbind, tests))
}

cox_a5_all <- function(d, name) {
  models <- list(); coefs <- list(); tests <- list()
  for (outcome in names(a5_outcomes(d, name))) {
    od <- a5_outcomes(d, name)[[outcome]]
    specs <- c(lapply(STRATIFIERS, function(v) list(vars = v, model = "univariable", stratum = NULL)),
               list(list(vars = MULTIVARIABLE, model = "multivariable", stratum = NULL),
                    list(vars = MULTIVARIABLE, model = "multivariable_site_stratified", stratum = "site")))
    for (s in specs) {
      r <- cox_a5(od, s$vars, s$model, s$stratum)
      models[[length(models) + 1]] <- cbind(outcome = outcome, r$models, stringsAsFactors = FALSE)
      if (s$model != "univariable") tests[[length(tests) + 1]] <- cbind(outcome = outcome, r$tests,
                                                                        stringsAsFactors = FALSE)
      if (s$model == "multivariable_site_stratified") coefs[[length(coefs) + 1]] <- cbind(
        outcome = outcome, r$coef, stringsAsFactors = FALSE)
    }
  }
  list(models = do.call(rbind, models), coef = do.call(rbind, coefs), tests = do.call(rbind, tests))
}

for (name in datasets) {
  d <- read_patients(root, name)
  out <- file.path(root, "expected", name)
  dir.create(out, recursive = TRUE, showWarnings = FALSE)
  write_out(incidence_proportion(d), out, "incidence_proportion.csv")
  rr <- rate_ratios(d)
  write_out(rr, out, "rate_ratios.csv")
  fg <- fine_gray(d)
  write_out(fg, out, "fine_gray.csv")
  write_out(standardised_rates(d), out, "standardised_rates.csv")
  a5 <- cox_a5_all(d, name)
  write_out(a5$coef, out, "cox_site_stratified.csv")
  write_out(a5$models, out, "cox_models.csv")
  write_out(a5$tests, out, "cox_tests.csv")
  write.csv(data.frame(r = R.version.string, MASS = as.character(packageVersion("MASS")),
                       cmprsk = as.character(packageVersion("cmprsk")),
                       epitools = as.character(packageVersion("epitools")),
                       survival = as.character(packageVersion("survival"))),
            file.path(out, "versions_v11.csv"), row.names = FALSE)
  cat(name, ": ", nrow(d), " patients; A9 ", rr$n_rows[1], " aggregated rows; A10 ", nrow(fg), " rows; A5 ",
      nrow(a5$models), " Cox models\n", sep = "")
}

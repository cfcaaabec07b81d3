# Expected values for the Cox-model extras of vigil.stats.survival (strata, log-likelihoods, AIC,
# concordance, per-term Wald and likelihood-ratio tests), computed with R's survival package.
#
# Usage (from the project root):  Rscript tests/reference/cox_extras_reference.R tests/reference
# Reads  <root>/data/ordinary.csv, stratified.csv (tests/reference/make_cox_extras_datasets.py) and
#        aliased.csv (b = a in every patient)
# Writes <root>/expected/cox_extras/
#   models.csv   per model: fit$n, fit$nevent, fit$loglik (at beta = 0 and at the estimate), AIC(fit)
#                and fit$concordance (counts, concordance, std; = summary(fit)$concordance)
#   coef.csv     coef and se(coef) per column, NA where aliased
#   terms.csv    per term: the Wald chi-square of the term's coefficients, computed by
#                survival:::coxph.wtest on its non-NA coefficients and their block of fit$var
#                (coxph.wtest itself mishandles NA: it keeps b[!which(is.na(b))]); and the
#                LRT, Df and Pr(>Chi) of drop1(fit, test = "Chisq") (the strata(site) row of a
#                stratified model, the stratified against the unstratified fit, is left out)
#   zph.csv      cox.zph(fit) (transform = "km"): chisq, df, p per term and GLOBAL
#
# Every model is coxph(ties = "efron") on all patients of the dataset (event = status 1, anything
# else censored), factors treatment-coded with the SAP's reference level first (sap_levels.R;
# other variables: sorted levels), levels without patients left out. `variables` lists the terms
# in model order; `strata` names the strata() variable, empty when there is none.

suppressPackageStartupMessages(library(survival))

args <- commandArgs(trailingOnly = TRUE)
root <- if (length(args) >= 1) args[1] else "tests/reference"
out <- file.path(root, "expected", "cox_extras")
dir.create(out, recursive = TRUE, showWarnings = FALSE)
source(file.path(root, "sap_levels.R"))  # SAP_LEVELS

write_out <- function(frame, name) {
  # 17 significant digits: the CSV carries every bit of the double
  for (col in names(frame)) if (is.double(frame[[col]])) frame[[col]] <- sprintf("%.17g", frame[[col]])
  frame[frame == "NA"] <- NA
  write.csv(frame, file.path(out, name), row.names = FALSE, na = "")
}

MODELS <- list(
  list(dataset = "ordinary", model = "univariable", vars = "charlson", strata = ""),
  list(dataset = "ordinary", model = "univariable+strata", vars = "charlson", strata = "site"),
  list(dataset = "ordinary", model = "multivariable", vars = c("sex", "charlson", "edss"), strata = ""),
  list(dataset = "ordinary", model = "multivariable+strata", vars = c("sex", "charlson", "edss"), strata = "site"),
  list(dataset = "stratified", model = "univariable", vars = "charlson", strata = ""),
  list(dataset = "stratified", model = "univariable+strata", vars = "charlson", strata = "site"),
  list(dataset = "stratified", model = "multivariable", vars = c("sex", "age_group", "charlson"), strata = ""),
  list(dataset = "stratified", model = "multivariable+strata", vars = c("sex", "age_group", "charlson"),
       strata = "site"),
  list(dataset = "stratified", model = "region", vars = c("sex", "region", "charlson"), strata = ""),
  # region is constant within site: NA under strata(site)
  list(dataset = "stratified", model = "region+strata", vars = c("sex", "region", "charlson"), strata = "site"),
  list(dataset = "aliased", model = "aliased", vars = c("a", "b", "c"), strata = "")
)

read_dataset <- function(name) read.csv(file.path(root, "data", paste0(name, ".csv")), colClasses = "character")

fit_model <- function(d, m) {
  dm <- data.frame(t = as.numeric(d$t), status = as.integer(d$status))
  for (v in m$vars) {
    lv <- if (is.null(SAP_LEVELS[[v]])) sort(unique(d[[v]])) else SAP_LEVELS[[v]]
    dm[[v]] <- factor(d[[v]], levels = lv[lv %in% d[[v]]])
  }
  rhs <- paste(m$vars, collapse = " + ")
  if (m$strata != "") {
    dm[[m$strata]] <- d[[m$strata]]
    rhs <- paste0(rhs, " + strata(", m$strata, ")")
  }
  # the formula's environment is this function's, where drop1's refits find dm
  coxph(as.formula(paste("Surv(t, status == 1) ~", rhs)), data = dm, ties = "efron")
}

models <- list(); coefs <- list(); terms <- list(); zph <- list()
for (m in MODELS) {
  fit <- fit_model(read_dataset(m$dataset), m)
  key <- data.frame(dataset = m$dataset, model = m$model)
  cc <- fit$concordance
  models[[length(models) + 1]] <- cbind(key, data.frame(
    variables = paste(m$vars, collapse = " "), strata = m$strata, n = fit$n, n_events = fit$nevent,
    loglik_null = fit$loglik[1], loglik = fit$loglik[2], aic = AIC(fit),
    concordant = cc[["concordant"]], discordant = cc[["discordant"]], tied_x = cc[["tied.x"]],
    tied_y = cc[["tied.y"]], tied_xy = cc[["tied.xy"]], concordance = cc[["concordance"]],
    concordance_se = cc[["std"]]))
  b <- coef(fit)
  coefs[[length(coefs) + 1]] <- cbind(key, data.frame(
    name = names(b), coef = unname(b), se = ifelse(is.na(b), NA, sqrt(diag(fit$var)))))
  dropped <- drop1(fit, test = "Chisq")
  for (v in m$vars) {
    cols <- fit$assign[[v]]
    ok <- cols[!is.na(b[cols])]
    wald <- if (length(ok)) survival:::coxph.wtest(fit$var[ok, ok, drop = FALSE], b[ok]) else list(test = NA, df = 0)
    terms[[length(terms) + 1]] <- cbind(key, data.frame(
      term = v, wald_chisq = as.double(wald$test), wald_df = wald$df,
      wald_p = pchisq(as.double(wald$test), wald$df, lower.tail = FALSE),
      lr_chisq = dropped[v, "LRT"], lr_df = dropped[v, "Df"], lr_p = dropped[v, "Pr(>Chi)"]))
  }
  z <- cox.zph(fit)$table
  zph[[length(zph) + 1]] <- cbind(key, data.frame(term = rownames(z), chisq = z[, "chisq"], df = z[, "df"],
                                                  p = z[, "p"]))
  cat(m$dataset, m$model, ": loglik", fit$loglik[2], "\n")
}
write_out(do.call(rbind, models), "models.csv")
write_out(do.call(rbind, coefs), "coef.csv")
write_out(do.call(rbind, terms), "terms.csv")
write_out(do.call(rbind, zph), "zph.csv")
write.csv(data.frame(r = R.version.string, survival = as.character(packageVersion("survival"))),
          file.path(out, "versions.csv"), row.names = FALSE)

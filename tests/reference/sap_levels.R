# The SAP's strata as the R reference scripts spell them (SAP v1.1 section 3; first level = reference),
# written here independently of vigil's codelists/strata.csv on purpose: the reference must not read
# the code under test. Sourced by the R reference scripts.
SAP_LEVELS <- list(
  site = NULL,  # the sites of the data, alphabetical
  sex = c("F", "M", "U"),
  age_group = c("18-29", "30-39", "40-49", ">=50"),
  charlson = c("0", "1", ">=2"),
  prior_dmt = c("0", "1", ">=2"),
  prior_high_efficacy = c("N", "Y"),
  edss = c("0-2.5", "3.0-5.5", ">=6.0", "unknown")
)
STRATIFIERS <- c("site", "sex", "age_group", "charlson", "prior_dmt", "prior_high_efficacy", "edss")
MULTIVARIABLE <- c("age_group", "sex", "charlson", "prior_dmt", "prior_high_efficacy", "edss")

levels_of <- function(d, v) if (v == "site") sort(unique(d$site)) else SAP_LEVELS[[v]]

# A patient-level reference dataset (tests/reference/data/<name>.csv: one row per patient, the columns of
# make_datasets.py), typed.
read_patients <- function(root, name) {
  read.csv(file.path(root, "data", paste0(name, ".csv")), colClasses = c(
    patient_id = "character", t = "numeric", status = "integer", t_followup = "numeric", n_serious = "numeric",
    site = "character", sex = "character", age_group = "character", charlson = "character",
    prior_dmt = "character", prior_high_efficacy = "character", edss = "character"))
}

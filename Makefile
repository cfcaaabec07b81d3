# The README's two commands: `make demo` and `make test`. Each needs only Python 3.11:
# it bootstraps uv into .tools/, then installs the locked environment into .venv/.
PYTHON ?= python3
UV_VERSION := 0.13.8
UV := .tools/bin/uv
VENV := .venv
VIGIL := $(VENV)/bin/vigil
PYTEST_ARGS ?=
export UV_PROJECT_ENVIRONMENT := $(VENV)
# Bytecode compiled once at install: where PYTHONDONTWRITEBYTECODE is set (CI images often do),
# every process would otherwise recompile GX, Prefect and pandas from source (~10 s per import of GX).
export UV_COMPILE_BYTECODE := 1
export GX_ANALYTICS_ENABLED := False
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120

.PHONY: install demo test test-fast reference benchmark fuzz clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

install: $(VENV)/.installed

demo: install
	$(VIGIL) demo

# Tests run on every core (pytest-xdist), one test file per worker at a time so that a module's
# shared study is built once: TEST_WORKERS=0 runs them in this process. Modules are handed out in
# collection order, the longest first (tests/conftest.py), not xdist's default of the most tests first.
TEST_WORKERS ?= auto
TEST_PARALLEL = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

test: install
	$(VENV)/bin/python -m pytest $(TEST_PARALLEL) $(PYTEST_ARGS)

# The unit tier, under a minute: no Great Expectations, no Prefect, no PDF (tests/conftest.py, --fast).
test-fast: install
	$(VENV)/bin/python -m pytest --fast $(TEST_PARALLEL) $(PYTEST_ARGS)

# Regenerates the R reference; tests only read its output. Needs Debian's r-base-core, r-cran-survival,
# r-cran-cmprsk, r-cran-mass, r-cran-epitools and r-cran-metafor, and for the sequential test CRAN's Sequential 4.5 (pure R):
# install r-cran-boot, r-cran-maxlik and r-cran-fftw, then `R CMD INSTALL` the sources of pmultinom and
# Sequential 4.5 (docs/monitoring.md).
# The export's tidy table is read by CRAN's omopgenerics (1.3.0), which needs dplyr >= 1.1.0 (newer than
# bookworm's r-cran-dplyr): install it and its newer dependencies into a library of their own, R_OMOP_LIB.
R_OMOP_LIB ?= /usr/local/lib/R/vigil-omopgenerics
reference: install
	$(VENV)/bin/python tests/reference/make_datasets.py tests/reference/data
	Rscript tests/reference/survival_reference.R tests/reference
	$(VENV)/bin/python tests/reference/make_v11_datasets.py tests/reference/data
	Rscript tests/reference/analysis_v11_reference.R tests/reference
	Rscript tests/reference/aliased_reference.R tests/reference
	Rscript tests/reference/sequential_reference.R tests/reference
	$(VENV)/bin/python tests/reference/make_network_datasets.py tests/reference/data
	Rscript tests/reference/network_reference.R tests/reference
	$(VENV)/bin/python tests/reference/make_finegray_datasets.py tests/reference/data
	Rscript tests/reference/finegray_reference.R tests/reference
	$(VENV)/bin/python tests/reference/make_rates_datasets.py tests/reference/data
	Rscript tests/reference/rates_reference.R tests/reference
	$(VENV)/bin/python tests/reference/make_cox_extras_datasets.py tests/reference/data
	Rscript tests/reference/cox_extras_reference.R tests/reference
	$(VENV)/bin/python tests/test_export.py --write-sample tests/reference/data
	R_LIBS=$(R_OMOP_LIB) Rscript tests/reference/export_reference.R tests/reference

benchmark: install
	$(VENV)/bin/python benchmarks/benchmark.py --repeat 3
	$(VENV)/bin/python benchmarks/benchmark.py --null-simulation 20000

# Hostile deliveries for a set time (not a test): make fuzz FUZZ_MINUTES=20
FUZZ_MINUTES ?= 20
fuzz: install
	$(VENV)/bin/python tests/fuzz/fuzz_deliveries.py --minutes $(FUZZ_MINUTES)

clean:
	rm -rf .venv .tools warehouse demo-study

#!/usr/bin/env bash
# Fetch real sample data shipped inside public packages and lay it out under DATA_DIR.
#
# Usage: scripts/fetch_data.sh [DATA_DIR]   (default: <repo root>/data; a given path is
#        taken relative to the current directory)
#
# Sources (pinned; override with the env vars below):
#   iris-sample-data  PyPI sdist  -> DATA_DIR/iris-sample-data/ (whole sample_data folder)
#                                    DATA_DIR/nemo/  (nemo_1m_2015*grid-T.nc, 3 netCDF4 files)
#   libncarg-data     Debian .deb -> DATA_DIR/.cache/ncarg/ (dpkg-deb -x)
#                                    DATA_DIR/ncarg -> .cache/ncarg/usr/share/ncarg/data (symlink)
#                                    DATA_DIR/sao/   (950318{00..23}_sao.cdf, 24 netCDF3 files)
#   cfgrib            PyPI sdist  -> DATA_DIR/cfgrib-samples/ (tests/sample-data/)
#   zarr              PyPI sdist  -> DATA_DIR/zarr2-fixture/  (fixture/, Zarr v2 arrays)
# The wider corpus of the conformance harness (one folder per source, under DATA_DIR/corpus/):
#   ferret-datasets   Debian .deb -> corpus/ferret-datasets/ (usr/share/ferret-vis/data: netCDF3)
#   r-cran-stars      Debian .deb -> corpus/r-cran-stars/    (stars/nc: netCDF3/4)
#   r-cran-ncmeta     Debian .deb -> corpus/r-cran-ncmeta/   (ncmeta/extdata: netCDF3/4)
#   r-cran-ncdfgeom   Debian .deb -> corpus/r-cran-ncdfgeom/ (ncdfgeom/extdata: netCDF3)
#   python3-scipy     Debian .deb -> corpus/scipy/           (scipy/io/tests/data: netCDF3 and more)
#   libeccodes-data   Debian .deb -> corpus/eccodes-samples/ (ecCodes' GRIB1/GRIB2 samples, *.tmpl)
#   cf-python         PyPI sdist  -> corpus/cf-python/       (cf/test: netCDF3/4 test files)
#   xarray            PyPI sdist  -> corpus/xarray/          (xarray/tests/data)
#   r-cran-stars      Debian .deb -> geotiff/stars/  (stars/tif: real GeoTIFFs: Landsat 7
#                                    L7_ETMs.tif, a DEM, land cover, a rotated grid)
#
# Derived from those (no package ships them), by scripts/derive_samples.py run with $PYTHON,
# which must have the project installed (the Makefile passes the venv's):
#   DATA_DIR/nemo-zarr-v3/<nemo stem>.zarr  the 3 NEMO files as Zarr v3 stores, sharded arrays
#   DATA_DIR/nemo-zarr-v2/<nemo stem>.zarr  the 3 NEMO files as Zarr v2 stores, consolidated
#   DATA_DIR/era5-series/era5-<YYYYMMDDHH>.grib  cfgrib's era5-levels-members.grib split into
#                                    one file per analysis time (4 files, messages unchanged)
#   DATA_DIR/uneven-splits/<name>/<stem>_<YYYY|YYYYMM>.nc  real daily files cut at calendar
#                                    boundaries into files of uneven length (derive_samples.py
#                                    calendar-split; values bit-identical, checked), split.json:
#                                    chi200-monthly (ncarg cdf/chi200_ud_smooth.nc: Dec 1950-May
#                                    1951, 31/31/28/31/30/31 days), test_file2-yearly (cf-python
#                                    test_file2.nc, 360_day calendar: 30/360x4/330 days)
#   DATA_DIR/corpus-splits/<folder>/<stem>/  every corpus/*, ncarg/nug, ncarg/cdf netCDF file with a
#                                    record or time dimension, split along it into 2-4 files
#                                    (derive_samples.py split: same format, dtypes, attributes,
#                                    fill values, chunking and compression), with a split.json
#   DATA_DIR/geotiff/l7-bands/L7_ETMs_B<n>.tif  L7_ETMs.tif split into 6 tiled single-band
#                                    GeoTIFFs with overviews (derive_samples.py geotiff-bands;
#                                    values, CRS and transform checked equal)
# Their stamps name the source version and a hash of derive_samples.py, so editing the script
# derives them again.
#
# Downloaded archives are kept in DATA_DIR/.cache/downloads/. A source whose stamp file
# (DATA_DIR/.cache/stamps/<source>-<version>.done) exists and whose outputs are present is
# skipped. Everything is built in a temp dir under DATA_DIR/.cache/ and moved into place
# before the stamp is written, so an interrupted run never leaves a stamped half-populated
# folder. DATA_DIR gets a `.gitignore` containing `*`, so nothing in it can be added to git.
set -euo pipefail

IRIS_SAMPLE_DATA_VERSION="${IRIS_SAMPLE_DATA_VERSION:-2.5.2}"
NCARG_DATA_VERSION="${NCARG_DATA_VERSION:-6.6.2.dfsg.1-1}"
CFGRIB_VERSION="${CFGRIB_VERSION:-0.9.15.1}"
ZARR2_VERSION="${ZARR2_VERSION:-2.18.7}"
# The wider corpus of the conformance harness (scripts/conformance.py; see DATA_SURVEY.md).
FERRET_DATASETS_VERSION="${FERRET_DATASETS_VERSION:-7.6.0-5}"
R_STARS_VERSION="${R_STARS_VERSION:-0.6-0-4}"
R_NCMETA_VERSION="${R_NCMETA_VERSION:-0.3.5-1}"
R_NCDFGEOM_VERSION="${R_NCDFGEOM_VERSION:-1.1.4+dfsg-1}"
SCIPY_DEB_VERSION="${SCIPY_DEB_VERSION:-1.10.1-2}"
ECCODES_DATA_VERSION="${ECCODES_DATA_VERSION:-2.28.0-1}"
CF_PYTHON_VERSION="${CF_PYTHON_VERSION:-3.21.0}"
XARRAY_SDIST_VERSION="${XARRAY_SDIST_VERSION:-2026.9.0}"
PYTHON="${PYTHON:-python3}"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${1:-$REPO_ROOT/data}"
mkdir -p "$DATA_DIR"
DATA_DIR="$(cd "$DATA_DIR" && pwd)"
CACHE="$DATA_DIR/.cache"
DOWNLOADS="$CACHE/downloads"
STAMPS="$CACHE/stamps"
mkdir -p "$DOWNLOADS" "$STAMPS"
[[ -f "$DATA_DIR/.gitignore" ]] || printf '# fetched by scripts/fetch_data.sh; never commit\n*\n' >"$DATA_DIR/.gitignore"

# One run at a time per DATA_DIR.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE/.lock"
    flock -n 9 || { echo "fetch_data: another run holds $CACHE/.lock; waiting" >&2; flock 9; }
fi

TMP_DIRS=()
cleanup() { local d; for d in "${TMP_DIRS[@]+"${TMP_DIRS[@]}"}"; do rm -rf -- "$d"; done; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

new_tmp() {  # new_tmp NAME -> sets $tmp to a fresh dir on the same filesystem as DATA_DIR
    tmp="$(mktemp -d "$CACHE/tmp.$1.XXXXXX")"
    TMP_DIRS+=("$tmp")
}

die() { echo "fetch_data: error: $*" >&2; exit 1; }

run_logged() {  # run_logged LOGFILE CMD...  (quiet unless the command fails)
    local log="$1"; shift
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        die "command failed: $*"
    fi
}

is_cached() {  # is_cached STAMP OUTPUT...
    local stamp="$1" out; shift
    [[ -f "$STAMPS/$stamp" ]] || return 1
    for out in "$@"; do [[ -e "$DATA_DIR/$out" ]] || return 1; done
}

install_outputs() {  # install_outputs STAGE_DIR STAMP NAME...  (replace targets, then stamp)
    local stage="$1" stamp="$2" name; shift 2
    for name in "$@"; do
        [[ -e "$stage/$name" || -L "$stage/$name" ]] || die "stage is missing $name"
    done
    for name in "$@"; do
        mkdir -p "$DATA_DIR/$(dirname "$name")"
        rm -rf -- "${DATA_DIR:?}/$name"
        mv -- "$stage/$name" "$DATA_DIR/$name"
    done
    date -u +%Y-%m-%dT%H:%M:%SZ >"$STAMPS/$stamp"
}

pip_sdist() {  # pip_sdist NAME VERSION TMP -> prints path of the sdist in DOWNLOADS
    local name="$1" version="$2" tmp="$3" found
    found="$(find "$DOWNLOADS" -maxdepth 1 \( -iname "$(tr - _ <<<"$name")-$version.tar.gz" \
        -o -iname "$name-$version.tar.gz" \) -print -quit)"
    if [[ -z "$found" ]]; then
        mkdir -p "$tmp/dl"
        run_logged "$tmp/pip.log" "$PYTHON" -m pip download --no-deps --no-binary "$name" \
            --dest "$tmp/dl" "$name==$version"
        found="$(find "$tmp/dl" -maxdepth 1 -name '*.tar.gz' -print -quit)"
        [[ -n "$found" ]] || die "pip download of $name==$version produced no sdist"
        mv -- "$found" "$DOWNLOADS/"
        found="$DOWNLOADS/$(basename "$found")"
    fi
    printf '%s\n' "$found"
}

sdist_root() {  # sdist_root ARCHIVE -> top-level folder inside the sdist (PEP 517: <name>-<ver>)
    basename "$1" .tar.gz
}

# --------------------------------------------------------------------------------------------
fetch_iris() {
    local stamp="iris-sample-data-$IRIS_SAMPLE_DATA_VERSION.done" tmp sdist root n
    if is_cached "$stamp" iris-sample-data nemo; then
        echo "iris-sample-data $IRIS_SAMPLE_DATA_VERSION: cached"; return
    fi
    rm -f -- "$STAMPS/$stamp"
    new_tmp iris
    sdist="$(pip_sdist iris-sample-data "$IRIS_SAMPLE_DATA_VERSION" "$tmp")"
    root="$(sdist_root "$sdist")"
    mkdir -p "$tmp/x" "$tmp/stage/nemo"
    tar --no-same-owner -xzf "$sdist" -C "$tmp/x" "$root/iris_sample_data/sample_data"
    mv -- "$tmp/x/$root/iris_sample_data/sample_data" "$tmp/stage/iris-sample-data"
    cp -p -- "$tmp/stage/iris-sample-data"/NEMO/nemo_1m_2015*grid-T.nc "$tmp/stage/nemo/"
    n="$(find "$tmp/stage/nemo" -name '*.nc' | wc -l)"
    [[ "$n" -eq 3 ]] || die "expected 3 NEMO files, found $n"
    install_outputs "$tmp/stage" "$stamp" iris-sample-data nemo
    echo "iris-sample-data $IRIS_SAMPLE_DATA_VERSION: fetched -> iris-sample-data/, nemo/ ($n files)"
}

fetch_ncarg() {
    local stamp="libncarg-data-$NCARG_DATA_VERSION.done" tmp deb h n
    if is_cached "$stamp" .cache/ncarg/usr/share/ncarg/data ncarg/cdf sao; then
        echo "libncarg-data $NCARG_DATA_VERSION: cached"; return
    fi
    rm -f -- "$STAMPS/$stamp"
    new_tmp ncarg
    deb="$DOWNLOADS/libncarg-data_${NCARG_DATA_VERSION}_all.deb"
    if [[ ! -f "$deb" ]]; then
        if ! apt-cache policy libncarg-data 2>/dev/null | grep -Eq 'Candidate: [^(]'; then
            run_logged "$tmp/apt-update.log" apt-get update
        fi
        mkdir -p "$tmp/dl"
        # apt-get download writes into the current directory.
        (cd "$tmp/dl" && run_logged "$tmp/apt.log" apt-get download "libncarg-data=$NCARG_DATA_VERSION") ||
            die "apt-get download libncarg-data=$NCARG_DATA_VERSION failed (set NCARG_DATA_VERSION?)"
        mv -- "$tmp/dl"/libncarg-data_*_all.deb "$deb"
    fi
    mkdir -p "$tmp/stage/ncarg-x" "$tmp/stage/sao"
    dpkg-deb -x "$deb" "$tmp/stage/ncarg-x"
    [[ -d "$tmp/stage/ncarg-x/usr/share/ncarg/data/cdf" ]] || die "unexpected libncarg-data layout"
    for h in $(seq -w 0 23); do
        cp -p -- "$tmp/stage/ncarg-x/usr/share/ncarg/data/cdf/950318${h}_sao.cdf" "$tmp/stage/sao/"
    done
    n="$(find "$tmp/stage/sao" -name '*_sao.cdf' | wc -l)"
    ln -s .cache/ncarg/usr/share/ncarg/data "$tmp/stage/ncarg"
    # The extracted tree lives in .cache/ncarg; replace it first, then the links into it.
    rm -rf -- "$CACHE/ncarg"
    mv -- "$tmp/stage/ncarg-x" "$CACHE/ncarg"
    install_outputs "$tmp/stage" "$stamp" ncarg sao
    echo "libncarg-data $NCARG_DATA_VERSION: fetched -> .cache/ncarg/, ncarg -> .cache/ncarg/usr/share/ncarg/data, sao/ ($n files)"
}

fetch_sdist_subdir() {  # fetch_sdist_subdir PIP_NAME VERSION SUBDIR_IN_SDIST TARGET
    local name="$1" version="$2" sub="$3" target="$4" stamp tmp sdist root n
    stamp="$name-$version.done"
    if is_cached "$stamp" "$target"; then
        echo "$name $version: cached"; return
    fi
    rm -f -- "$STAMPS/$stamp"
    new_tmp "$name"
    sdist="$(pip_sdist "$name" "$version" "$tmp")"
    root="$(sdist_root "$sdist")"
    mkdir -p "$tmp/x" "$tmp/stage/$(dirname "$target")"
    tar --no-same-owner -xzf "$sdist" -C "$tmp/x" "$root/$sub"
    mv -- "$tmp/x/$root/$sub" "$tmp/stage/$target"
    n="$(find "$tmp/stage/$target" -type f | wc -l)"
    install_outputs "$tmp/stage" "$stamp" "$target"
    echo "$name $version: fetched -> $target/ ($n files)"
}

fetch_deb_subdir() {  # fetch_deb_subdir DEB_NAME VERSION SUBDIR_IN_DEB TARGET
    local name="$1" version="$2" sub="$3" target="$4" stamp tmp deb n
    stamp="$name-$version.done"
    if is_cached "$stamp" "$target"; then
        echo "$name $version: cached"; return
    fi
    rm -f -- "$STAMPS/$stamp"
    new_tmp "$name"
    deb="$(find "$DOWNLOADS" -maxdepth 1 -name "${name}_$(sed 's/^[0-9]*://' <<<"$version")_*.deb" -print -quit)"
    if [[ -z "$deb" ]]; then
        if ! apt-cache policy "$name" 2>/dev/null | grep -Eq 'Candidate: [^(]'; then
            run_logged "$tmp/apt-update.log" apt-get update
        fi
        mkdir -p "$tmp/dl"
        (cd "$tmp/dl" && run_logged "$tmp/apt.log" apt-get download "$name=$version") ||
            die "apt-get download $name=$version failed (set its *_VERSION variable?)"
        deb="$(find "$tmp/dl" -maxdepth 1 -name '*.deb' -print -quit)"
        mv -- "$deb" "$DOWNLOADS/"
        deb="$DOWNLOADS/$(basename "$deb")"
    fi
    mkdir -p "$tmp/x" "$tmp/stage/$(dirname "$target")"
    dpkg-deb -x "$deb" "$tmp/x"
    [[ -d "$tmp/x/$sub" ]] || die "$name $version: no $sub in the package"
    mv -- "$tmp/x/$sub" "$tmp/stage/$target"
    n="$(find "$tmp/stage/$target" -type f | wc -l)"
    install_outputs "$tmp/stage" "$stamp" "$target"
    echo "$name $version: fetched -> $target/ ($n files)"
}

DERIVE="$REPO_ROOT/scripts/derive_samples.py"
DERIVE_HASH="$(sha256sum "$DERIVE" | cut -c1-12)"

derive_nemo_zarr() {  # derive_nemo_zarr ZARR_FORMAT  (2 or 3)
    local format="$1" target="nemo-zarr-v$1" stamp tmp n
    stamp="$target-$IRIS_SAMPLE_DATA_VERSION-$DERIVE_HASH.done"
    if is_cached "$stamp" "$target"; then
        echo "$target: cached"; return
    fi
    rm -f -- "$STAMPS/$target"-*.done
    new_tmp "$target"
    run_logged "$tmp/derive.log" "$PYTHON" "$DERIVE" nemo-zarr --zarr-format "$format" \
        "$tmp/stage/$target" "$DATA_DIR"/nemo/nemo_1m_2015*grid-T.nc
    n="$(find "$tmp/stage/$target" -mindepth 1 -maxdepth 1 -name '*.zarr' | wc -l)"
    [[ "$n" -eq 3 ]] || die "expected 3 Zarr v$format stores, found $n"
    install_outputs "$tmp/stage" "$stamp" "$target"
    echo "$target: derived from nemo/ -> $target/ ($n Zarr v$format stores)"
}

KERCHUNK_REFS="$REPO_ROOT/scripts/make_kerchunk_refs.py"

derive_nemo_kerchunk() {  # kerchunk reference sets over nemo/ (pipelines/nemo-kerchunk.yaml)
    local target="nemo-kerchunk" stamp tmp n
    stamp="$target-$IRIS_SAMPLE_DATA_VERSION-$(sha256sum "$KERCHUNK_REFS" | cut -c1-12).done"
    if is_cached "$stamp" "$target"; then
        echo "$target: cached"; return
    fi
    rm -f -- "$STAMPS/$target"-*.done
    new_tmp "$target"
    run_logged "$tmp/derive.log" "$PYTHON" "$KERCHUNK_REFS" --relative-to "$DATA_DIR/$target" \
        "$tmp/stage/$target" "$DATA_DIR"/nemo/nemo_1m_2015*grid-T.nc
    n="$(find "$tmp/stage/$target" -mindepth 1 -maxdepth 1 | wc -l)"
    [[ "$n" -eq 3 ]] || die "expected 3 kerchunk reference sets, found $n"
    install_outputs "$tmp/stage" "$stamp" "$target"
    echo "$target: derived from nemo/ -> $target/ ($n kerchunk reference sets)"
}

derive_era5_series() {
    local target="era5-series" stamp tmp n
    stamp="$target-$CFGRIB_VERSION-$DERIVE_HASH.done"
    if is_cached "$stamp" "$target"; then
        echo "$target: cached"; return
    fi
    rm -f -- "$STAMPS/$target"-*.done
    new_tmp "$target"
    run_logged "$tmp/derive.log" "$PYTHON" "$DERIVE" grib-series \
        "$tmp/stage/$target" "$DATA_DIR/cfgrib-samples/era5-levels-members.grib"
    n="$(find "$tmp/stage/$target" -name 'era5-*.grib' | wc -l)"
    [[ "$n" -eq 4 ]] || die "expected 4 GRIB files (one per analysis time), found $n"
    install_outputs "$tmp/stage" "$stamp" "$target"
    echo "$target: derived from cfgrib-samples/era5-levels-members.grib -> $target/ ($n files)"
}

derive_uneven() {
    local target="uneven-splits" stamp tmp n
    stamp="$target-$NCARG_DATA_VERSION-$CF_PYTHON_VERSION-$DERIVE_HASH.done"
    if is_cached "$stamp" "$target"; then
        echo "$target: cached"; return
    fi
    rm -f -- "$STAMPS/$target"-*.done
    new_tmp "$target"
    run_logged "$tmp/derive-chi.log" "$PYTHON" "$DERIVE" calendar-split --by month \
        "$tmp/stage/$target/chi200-monthly" "$DATA_DIR/ncarg/cdf/chi200_ud_smooth.nc"
    run_logged "$tmp/derive-tf2.log" "$PYTHON" "$DERIVE" calendar-split --by year \
        "$tmp/stage/$target/test_file2-yearly" "$DATA_DIR/corpus/cf-python/test_file2.nc"
    n="$(find "$tmp/stage/$target" -name '*.nc' | wc -l)"
    [[ "$n" -eq 12 ]] || die "expected 12 calendar-split files, found $n"
    install_outputs "$tmp/stage" "$stamp" "$target"
    echo "$target: derived from ncarg/cdf, corpus/cf-python -> $target/ ($n files)"
}

derive_splits() {
    local target="corpus-splits" stamp tmp n
    stamp="$target-$DERIVE_HASH.done"
    if [[ -f "$STAMPS/$stamp" ]] && is_cached "$stamp" "$target" &&
        [[ ! "$STAMPS/$stamp" -ot "$CORPUS_NEWEST" ]]; then
        echo "$target: cached"; return
    fi
    rm -f -- "$STAMPS/$target"-*.done
    new_tmp "$target"
    # The hourly station files (sao) are a series already, and slow: not split.
    run_logged "$tmp/derive.log" "$PYTHON" "$DERIVE" split --exclude '*_sao.cdf' \
        "$tmp/stage/$target" "$DATA_DIR"/corpus/* "$DATA_DIR/ncarg/nug" "$DATA_DIR/ncarg/cdf"
    n="$(find "$tmp/stage/$target" -name split.json | wc -l)"
    install_outputs "$tmp/stage" "$stamp" "$target"
    echo "$target: derived -> $target/ ($n files split into series)"
}

fetch_geotiff() {  # the real GeoTIFFs of r-cran-stars, and a band series derived from one
    local target="geotiff" stamp tmp deb n
    stamp="$target-$R_STARS_VERSION-$DERIVE_HASH.done"
    if is_cached "$stamp" "$target/stars/L7_ETMs.tif" "$target/l7-bands"; then
        echo "$target: cached"; return
    fi
    rm -f -- "$STAMPS/$target"-*.done
    new_tmp "$target"
    deb="$(find "$DOWNLOADS" -maxdepth 1 -name "r-cran-stars_${R_STARS_VERSION}_*.deb" -print -quit)"
    [[ -n "$deb" ]] || die "r-cran-stars $R_STARS_VERSION: .deb not downloaded (fetch it first)"
    mkdir -p "$tmp/x" "$tmp/stage/$target"
    dpkg-deb -x "$deb" "$tmp/x"
    mv -- "$tmp/x/usr/lib/R/site-library/stars/tif" "$tmp/stage/$target/stars"
    run_logged "$tmp/derive.log" "$PYTHON" "$DERIVE" geotiff-bands \
        "$tmp/stage/$target/l7-bands" "$tmp/stage/$target/stars/L7_ETMs.tif"
    n="$(find "$tmp/stage/$target/l7-bands" -name 'L7_ETMs_B*.tif' | wc -l)"
    [[ "$n" -eq 6 ]] || die "expected 6 single-band GeoTIFFs, found $n"
    install_outputs "$tmp/stage" "$stamp" "$target"
    echo "$target: fetched from r-cran-stars -> $target/stars/, derived $target/l7-bands/ ($n files)"
}

# --------------------------------------------------------------------------------------------
SECONDS=0
fetch_iris
fetch_ncarg
fetch_sdist_subdir cfgrib "$CFGRIB_VERSION" tests/sample-data cfgrib-samples
fetch_sdist_subdir zarr "$ZARR2_VERSION" fixture zarr2-fixture
derive_nemo_zarr 3
derive_nemo_zarr 2
derive_nemo_kerchunk
derive_era5_series
fetch_deb_subdir ferret-datasets "$FERRET_DATASETS_VERSION" usr/share/ferret-vis/data \
    corpus/ferret-datasets
fetch_deb_subdir r-cran-stars "$R_STARS_VERSION" usr/lib/R/site-library/stars/nc \
    corpus/r-cran-stars
fetch_deb_subdir r-cran-ncmeta "$R_NCMETA_VERSION" usr/lib/R/site-library/ncmeta/extdata \
    corpus/r-cran-ncmeta
fetch_deb_subdir r-cran-ncdfgeom "$R_NCDFGEOM_VERSION" usr/lib/R/site-library/ncdfgeom/extdata \
    corpus/r-cran-ncdfgeom
fetch_deb_subdir python3-scipy "$SCIPY_DEB_VERSION" usr/lib/python3/dist-packages/scipy/io/tests/data \
    corpus/scipy
fetch_deb_subdir libeccodes-data "$ECCODES_DATA_VERSION" usr/share/eccodes/samples \
    corpus/eccodes-samples
fetch_sdist_subdir cf-python "$CF_PYTHON_VERSION" cf/test corpus/cf-python
fetch_geotiff
fetch_sdist_subdir xarray "$XARRAY_SDIST_VERSION" xarray/tests/data corpus/xarray
# (derive_uneven runs after derive_splits: its stamp must not count as a newer corpus)
CORPUS_NEWEST="$(ls -t "$STAMPS"/*.done | grep -v -e "/uneven-splits-" -e "/geotiff-" | head -1)"
derive_splits
derive_uneven

count() { find -L "$DATA_DIR/$1" -type f | wc -l | tr -d ' '; }
stores() { find "$DATA_DIR/$1" -mindepth 1 -maxdepth 1 -name '*.zarr' | wc -l | tr -d ' '; }
echo "done in ${SECONDS}s: $DATA_DIR: nemo=$(count nemo) sao=$(count sao)" \
    "iris-sample-data=$(count iris-sample-data) ncarg=$(count ncarg)" \
    "cfgrib-samples=$(count cfgrib-samples) zarr2-fixture=$(count zarr2-fixture)" \
    "era5-series=$(count era5-series) corpus=$(count corpus)" \
    "corpus-splits=$(count corpus-splits) uneven-splits=$(count uneven-splits)" \
    "geotiff=$(count geotiff) files;" \
    "nemo-zarr-v3=$(stores nemo-zarr-v3) nemo-zarr-v2=$(stores nemo-zarr-v2) stores"

# Managed by the platform deploy (codeb/host): installed at /usr/local/lib/codeb/prom-write.sh
# and sourced by the platform's shell programs that publish metrics.
#
# prom_write NAME: write stdin as node-exporter textfile $TEXTFILE_DIR/NAME.prom atomically
# (the collector never reads a half-written file). TEXTFILE_DIR is set by the sourcing
# program's configuration file.
prom_write() {
    local tmp
    tmp=$(mktemp "${TEXTFILE_DIR:?}/.$1.XXXXXX")
    cat > "$tmp"
    chmod 644 "$tmp"
    mv -f "$tmp" "$TEXTFILE_DIR/$1.prom"
}

/* report_svg.c — the score-vs-length line plot as a standalone SVG file (no plotting library). */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "results/report.h"

/* Canvas and plot area, in SVG user units (pixels). */
enum { W = 760, H = 460, LEFT = 64, RIGHT = 200, TOP = 44, BOTTOM = 56 };

static const char *const palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                      "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
#define N_COLORS ((int)(sizeof palette / sizeof palette[0]))

static void put_escaped(FILE *out, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", out); break;
        case '>': fputs("&gt;", out); break;
        case '&': fputs("&amp;", out); break;
        case '"': fputs("&quot;", out); break;
        default: fputc(*s, out);
        }
    }
}

static double x_of(const ks_report *rep, int i) {
    double span = W - LEFT - RIGHT;
    return rep->n_lengths > 1 ? LEFT + span * i / (rep->n_lengths - 1) : LEFT + span / 2;
}

static double y_of(double score) { return TOP + (H - TOP - BOTTOM) * (1.0 - score / 100.0); }

static void axes(const ks_report *rep, FILE *out) {
    for (int v = 0; v <= 100; v += 20) {
        fprintf(out, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", LEFT, y_of(v), W - RIGHT,
                y_of(v));
        fprintf(out, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\" font-size=\"12\">%d</text>\n", LEFT - 8,
                y_of(v) + 4, v);
    }
    for (int i = 0; i < rep->n_lengths; i++) {
        char label[32];
        ks_report_length_label(rep->lengths[i], label, sizeof label);
        fprintf(out, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" font-size=\"12\">%s</text>\n", x_of(rep, i),
                H - BOTTOM + 18, label);
    }
    fprintf(out, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>\n", LEFT, H - BOTTOM, W - RIGHT,
            H - BOTTOM);
    fprintf(out, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>\n", LEFT, TOP, LEFT, H - BOTTOM);
    fprintf(out, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" font-size=\"13\">sequence length</text>\n",
            (LEFT + W - RIGHT) / 2, H - 14);
    fprintf(out, "<text x=\"16\" y=\"%d\" text-anchor=\"middle\" font-size=\"13\" transform=\"rotate(-90 16 %d)\">"
                 "score</text>\n", (TOP + H - BOTTOM) / 2, (TOP + H - BOTTOM) / 2);
}

/* One series: polylines through the consecutive known points (a gap breaks the line), a marker per point,
 * and its legend entry (slot k). values[i * stride] is the score at length i. */
static void series(const ks_report *rep, FILE *out, const double *values, int stride, const char *name,
                   const char *color, double width, int k) {
    int open = 0;
    for (int i = 0; i < rep->n_lengths; i++) {
        double v = values[i * stride];
        if (isnan(v)) {
            if (open) fputs("\"/>\n", out);
            open = 0;
            continue;
        }
        if (!open)
            fprintf(out, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%.1f\" points=\"", color, width);
        fprintf(out, "%s%.1f,%.1f", open ? " " : "", x_of(rep, i), y_of(v));
        open = 1;
    }
    if (open) fputs("\"/>\n", out);
    for (int i = 0; i < rep->n_lengths; i++)
        if (!isnan(values[i * stride]))
            fprintf(out, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", x_of(rep, i),
                    y_of(values[i * stride]), color);
    double ly = TOP + 10 + 18 * k;
    fprintf(out, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"%.1f\"/>\n",
            W - RIGHT + 16, ly, W - RIGHT + 40, ly, color, width);
    fprintf(out, "<text x=\"%d\" y=\"%.1f\" font-size=\"12\">", W - RIGHT + 46, ly + 4);
    put_escaped(out, name);
    fputs("</text>\n", out);
}

ks_status ks_report_write_svg(const ks_report *rep, const char *path) {
    FILE *out = fopen(path, "w");
    if (!out) return ks_fail(KS_ERR_IO, "%s: cannot create (%s)", path, strerror(errno));
    fprintf(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                 "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                 "font-family=\"sans-serif\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", W, H, W, H);
    fprintf(out, "<text x=\"%d\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">", (LEFT + W - RIGHT) / 2);
    put_escaped(out, rep->title[0] ? rep->title : "score vs sequence length");
    fputs("</text>\n", out);
    axes(rep, out);
    for (int c = 0; c < rep->n_cols; c++)
        series(rep, out, rep->score + c, rep->n_cols, rep->cols[c], palette[c % N_COLORS], 1.8, c);
    if (rep->row_avg) series(rep, out, rep->row_avg, 1, "Avg", "#000", 3.0, rep->n_cols);
    fputs("</svg>\n", out);
    int bad = ferror(out);
    if (fclose(out) != 0 || bad) return ks_fail(KS_ERR_IO, "%s: write failed", path);
    return KS_OK;
}

/* mmmambad.c: the daemon's main: options, then (as the HTTP layer lands)
 * load, serve, drain. */
#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "base/status.h"
#include "config.h"
#include "model/config.h"

int main(int argc, char **argv)
{
    struct mm_err err;
    struct mm_daemon_config cfg;
    if (mm_daemon_config_init(&cfg, &err) != MM_OK) {
        fprintf(stderr, "mmmambad: %s\n", err.msg);
        return 1;
    }
    enum mm_config_action action;
    int rc = 0;
    if (mm_daemon_config_parse_args(&cfg, argc, argv, &action, &err) != MM_OK) {
        fprintf(stderr, "mmmambad: %s\n", err.msg);
        rc = 2;
    } else if (action == MM_CONFIG_HELP) {
        mm_daemon_config_print_help(stdout, "mmmambad");
    } else if (action == MM_CONFIG_VERSION) {
        printf("mmmambad %s\n", PACKAGE_VERSION);
    } else if (action == MM_CONFIG_PRINT) {
        mm_daemon_config_print_file(stdout);
    } else if (mm_daemon_config_check(&cfg, &err) != MM_OK) {
        fprintf(stderr, "mmmambad: %s\n", err.msg);
        rc = 2;
    } else {
        struct mm_config mcfg;
        if (mm_config_load(cfg.model, &mcfg, &err) != MM_OK) {
            fprintf(stderr, "mmmambad: %s\n", err.msg);
            rc = 1;
        }
    }
    mm_daemon_config_free(&cfg);
    return rc;
}

/* log.h: leveled logging to stderr.
 *
 * Design: MM_LOG checks the level before evaluating its arguments, so a
 * debug line in a hot path costs one comparison when debug logging is off.
 * The level is process-wide (set once at start-up by a main); logging is
 * thread-safe (one fprintf per line). */
#ifndef MM_BASE_LOG_H
#define MM_BASE_LOG_H

enum mm_log_level {
    MM_LOG_DEBUG = 0,
    MM_LOG_INFO,
    MM_LOG_WARN,
    MM_LOG_ERROR,
    MM_LOG_OFF,
};

/* Current threshold; read by MM_LOG. Set with mm_log_set_level. */
extern enum mm_log_level mm_log_threshold;

void mm_log_set_level(enum mm_log_level level);
/* Parses "debug", "info", "warn", "error", "off"; returns -1 if unknown. */
int mm_log_parse_level(const char *name);
void mm_log_write(enum mm_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define MM_LOG(level, ...)                                                                         \
    do {                                                                                           \
        if ((level) >= mm_log_threshold)                                                           \
            mm_log_write((level), __VA_ARGS__);                                                    \
    } while (0)
#define MM_DEBUG(...) MM_LOG(MM_LOG_DEBUG, __VA_ARGS__)
#define MM_INFO(...) MM_LOG(MM_LOG_INFO, __VA_ARGS__)
#define MM_WARN(...) MM_LOG(MM_LOG_WARN, __VA_ARGS__)
#define MM_ERROR(...) MM_LOG(MM_LOG_ERROR, __VA_ARGS__)

#endif

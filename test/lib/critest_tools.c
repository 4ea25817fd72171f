/*
 * The few programs critest's images need that Debian's busybox-static lacks, in one static
 * multi-call binary (the name it is run by picks the program), so critest's substitute images
 * build offline (test/lib/critest_images.py):
 *
 *   pgrep / pkill PATTERN   match an extended regex against process names (/proc/PID/comm), as procps
 *   ipcs [-m|-q|-s]         the System V IPC tables of the caller's IPC namespace, as util-linux prints them
 *   ipcrm -m|-q|-s ID       remove one object by id
 *   nginx                   stands in for nginx: writes /var/run/nginx.pid, re-executes itself so that its
 *                           command line reads "nginx: master process ..." and answers HTTP 200 on
 *                           $CRITEST_HTTP_PORT (default 80)
 *   httpd                   stands in for Apache httpd: logs its "httpd -D FOREGROUND" command line and
 *                           answers HTTP 200 on port 80
 *   nnp                     e2e-test-images/nonewprivs: prints "Effective uid: N" (installed setuid root)
 *
 * Our own code, written for these tests only.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static const char NGINX_PATH[] = "/usr/sbin/nginx";
static const char NGINX_TITLE[] = "nginx: master process nginx -g daemon off;";

static int usage(const char *msg) {
    fprintf(stderr, "%s\n", msg);
    return 2;
}

/* pgrep/pkill: every process whose name matches, except ourselves. */
static int match_procs(int argc, char **argv, int kill_sig) {
    int sig = SIGTERM, i = 1;
    if (kill_sig && argc > 2 && argv[1][0] == '-' && argv[1][1] >= '0' && argv[1][1] <= '9') {
        sig = atoi(argv[1] + 1);
        i = 2;
    }
    if (i >= argc)
        return usage(kill_sig ? "usage: pkill [-SIGNUM] PATTERN" : "usage: pgrep PATTERN");
    regex_t re;
    if (regcomp(&re, argv[i], REG_EXTENDED | REG_NOSUB) != 0)
        return usage("invalid pattern");
    DIR *proc = opendir("/proc");
    if (proc == NULL) {
        perror("/proc");
        return 3;
    }
    int found = 0;
    pid_t self = getpid();
    struct dirent *d;
    while ((d = readdir(proc)) != NULL) {
        char *end;
        long pid = strtol(d->d_name, &end, 10);
        if (*end != '\0' || pid <= 0 || pid == self)
            continue;
        char path[64], name[64] = "";
        snprintf(path, sizeof path, "/proc/%ld/comm", pid);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue;
        if (fgets(name, sizeof name, f) != NULL)
            name[strcspn(name, "\n")] = '\0';
        fclose(f);
        if (regexec(&re, name, 0, NULL, 0) != 0)
            continue;
        found = 1;
        if (kill_sig) {
            if (kill((pid_t)pid, sig) != 0)
                fprintf(stderr, "pkill: killing pid %ld failed: %s\n", pid, strerror(errno));
        } else {
            printf("%ld\n", pid);
        }
    }
    closedir(proc);
    regfree(&re);
    return found ? 0 : 1;
}

/* One /proc/sysvipc table printed with util-linux's headers and columns. */
static void print_table(const char *file, const char *title, const char *header, int kind) {
    printf("\n------ %s --------\n%s\n", title, header);
    FILE *f = fopen(file, "r");
    if (f == NULL)
        return;
    char line[512];
    if (fgets(line, sizeof line, f) == NULL) { /* the column names */
        fclose(f);
        return;
    }
    while (fgets(line, sizeof line, f) != NULL) {
        long long key, id, a, b, c, d, e, f6;
        unsigned perms;
        if (kind == 'm') {
            /* key shmid perms size cpid lpid nattch uid ... */
            if (sscanf(line, "%lld %lld %o %lld %lld %lld %lld %lld", &key, &id, &perms, &a, &b, &c, &d, &e) == 8)
                printf("0x%08llx %-10lld %-10lld %-10o %-10lld %-10lld\n", key & 0xffffffffLL, id, e, perms, a, d);
        } else if (kind == 'q') {
            /* key msqid perms cbytes qnum lspid lrpid uid ... */
            if (sscanf(line, "%lld %lld %o %lld %lld %lld %lld %lld", &key, &id, &perms, &a, &b, &c, &d, &e) == 8)
                printf("0x%08llx %-10lld %-10lld %-10o %-12lld %-12lld\n", key & 0xffffffffLL, id, e, perms, a, b);
        } else {
            /* key semid perms nsems uid ... */
            if (sscanf(line, "%lld %lld %o %lld %lld %lld", &key, &id, &perms, &a, &f6, &c) >= 5)
                printf("0x%08llx %-10lld %-10lld %-10o %-10lld\n", key & 0xffffffffLL, id, f6, perms, a);
        }
    }
    fclose(f);
}

static int ipcs(int argc, char **argv) {
    int m = 0, q = 0, s = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-m") == 0) m = 1;
        else if (strcmp(argv[i], "-q") == 0) q = 1;
        else if (strcmp(argv[i], "-s") == 0) s = 1;
        else if (strcmp(argv[i], "-a") == 0) m = q = s = 1;
        else return usage("usage: ipcs [-m] [-q] [-s] [-a]");
    }
    if (!m && !q && !s)
        m = q = s = 1;
    if (q)
        print_table("/proc/sysvipc/msg", "Message Queues",
                    "key        msqid      owner      perms      used-bytes   messages    ", 'q');
    if (m)
        print_table("/proc/sysvipc/shm", "Shared Memory Segments",
                    "key        shmid      owner      perms      bytes      nattch     status      ", 'm');
    if (s)
        print_table("/proc/sysvipc/sem", "Semaphore Arrays",
                    "key        semid      owner      perms      nsems     ", 's');
    printf("\n");
    return 0;
}

static int ipcrm(int argc, char **argv) {
    int rc = 0;
    if (argc < 3 || argc % 2 == 0)
        return usage("usage: ipcrm -m|-q|-s ID ...");
    for (int i = 1; i + 1 < argc; i += 2) {
        int id = atoi(argv[i + 1]), r;
        if (strcmp(argv[i], "-m") == 0) r = shmctl(id, IPC_RMID, NULL);
        else if (strcmp(argv[i], "-q") == 0) r = msgctl(id, IPC_RMID, NULL);
        else if (strcmp(argv[i], "-s") == 0) r = semctl(id, 0, IPC_RMID);
        else return usage("usage: ipcrm -m|-q|-s ID ...");
        if (r != 0) {
            fprintf(stderr, "ipcrm: %s %d: %s\n", argv[i], id, strerror(errno));
            rc = 1;
        }
    }
    return rc;
}

/* A one-process HTTP/1.0 server: every request gets the same 200 page. */
static int serve(int port, const char *server) {
    signal(SIGPIPE, SIG_IGN);
    int fd = socket(AF_INET6, SOCK_STREAM, 0), family6 = fd >= 0, one = 1, zero = 0;
    if (fd < 0)
        fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        perror("socket");
        return 1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int bound;
    if (family6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = in6addr_any};
        bound = bind(fd, (struct sockaddr *)&a6, sizeof a6);
    } else {
        struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = INADDR_ANY};
        bound = bind(fd, (struct sockaddr *)&a4, sizeof a4);
    }
    if (bound != 0 || listen(fd, 64) != 0) {
        perror("bind/listen");
        return 1;
    }
    char body[256], head[256], req[4096];
    int blen = snprintf(body, sizeof body, "<html><body><h1>Welcome to %s (critest substitute)</h1></body></html>\n", server);
    int hlen = snprintf(head, sizeof head,
                        "HTTP/1.0 200 OK\r\nServer: %s\r\nContent-Type: text/html\r\nContent-Length: %d\r\n"
                        "Connection: close\r\n\r\n", server, blen);
    for (;;) {
        int c = accept(fd, NULL, NULL);
        if (c < 0)
            continue;
        struct timeval tv = {.tv_sec = 5};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ssize_t n = read(c, req, sizeof req); /* the request line and headers; the answer never depends on them */
        if (n > 0 && write(c, head, hlen) == hlen && strncmp(req, "HEAD ", 5) != 0)
            (void)!write(c, body, blen);
        close(c);
    }
}

static int nginx(char **argv) {
    if (strcmp(argv[0], NGINX_TITLE) != 0) {
        /* Once more under nginx's own title: critest looks for "master process" in /proc/1/cmdline and
         * for a process named nginx (the file name we exec keeps /proc/PID/comm "nginx"). */
        char *args[] = {(char *)NGINX_TITLE, NULL};
        execv(NGINX_PATH, args);
        perror(NGINX_PATH);
        return 1;
    }
    mkdir("/var/run", 0755);
    FILE *pid = fopen("/var/run/nginx.pid", "w");
    if (pid != NULL) {
        fprintf(pid, "%d\n", (int)getpid());
        fclose(pid);
    }
    const char *port = getenv("CRITEST_HTTP_PORT");
    return serve(port != NULL ? atoi(port) : 80, "nginx");
}

int main(int argc, char **argv) {
    const char *name = strrchr(argv[0], '/');
    name = name != NULL ? name + 1 : argv[0];
    if (strcmp(argv[0], NGINX_TITLE) == 0 || strcmp(name, "nginx") == 0)
        return nginx(argv);
    if (strcmp(name, "pgrep") == 0)
        return match_procs(argc, argv, 0);
    if (strcmp(name, "pkill") == 0)
        return match_procs(argc, argv, 1);
    if (strcmp(name, "ipcs") == 0)
        return ipcs(argc, argv);
    if (strcmp(name, "ipcrm") == 0)
        return ipcrm(argc, argv);
    if (strcmp(name, "httpd") == 0) {
        fprintf(stderr, "[core:notice] AH00094: Command line: 'httpd -D FOREGROUND'\n");
        return serve(80, "httpd");
    }
    if (strcmp(name, "nnp") == 0) {
        printf("Effective uid: %d\n", (int)geteuid());
        return 0;
    }
    fprintf(stderr, "critest-tools: unknown program %s\n", name);
    return 127;
}

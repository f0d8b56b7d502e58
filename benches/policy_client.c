/* Load generator for Postfix policy servers (SMTPD_POLICY_README): CONNS
 * persistent connections, each a thread that sends one RCPT-state request
 * and waits for its answer, again and again, for SECONDS. Requests look
 * like Postfix's (all of its attributes); the client address, sender and
 * instance vary per request (CLIENTS client addresses 10.X.Y.Z, 1000
 * senders), the recipient is RCPT.
 *
 *   cc -O2 -pthread -o policy_client benches/policy_client.c
 *   policy_client HOST PORT CONNS SECONDS CLIENTS RCPT
 *
 * Prints one JSON line: requests, seconds, requests/s and the answers by
 * their first word (DUNNO, DEFER_IF_PERMIT, 4xx/5xx codes, PREPEND, ...).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *host, *rcpt;
static int port, seconds, clients;
static double deadline;

enum { DUNNO, DEFER, REJECT, OTHER, KINDS };
static const char *kind_name[KINDS] = {"dunno", "defer_if_permit", "reply", "other"};

struct worker {
    pthread_t t;
    int id;
    long done, kinds[KINDS], errors;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *run(void *arg) {
    struct worker *w = arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("connect");
        w->errors++;
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    unsigned seed = 12345u + (unsigned)w->id * 7919u;
    char req[2048], buf[4096];
    long n = 0;
    while (now() < deadline) {
        unsigned c = (unsigned)rand_r(&seed) % (unsigned)clients;
        unsigned s = (unsigned)rand_r(&seed) % 1000u;
        int len = snprintf(req, sizeof req,
            "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
            "client_address=10.%u.%u.%u\nclient_name=unknown\nreverse_client_name=unknown\n"
            "client_port=40000\nhelo_name=mail%u.client.example\nsender=s%u@client%u.example\n"
            "recipient=%s\nrecipient_count=0\nqueue_id=\ninstance=%x.%lx.0\nsize=0\n"
            "etrn_domain=\nstress=\nsasl_method=\nsasl_username=\nsasl_sender=\n"
            "ccert_subject=\nccert_issuer=\nccert_fingerprint=\nccert_pubkey_fingerprint=\n"
            "encryption_protocol=\nencryption_cipher=\nencryption_keysize=0\n"
            "server_address=127.0.0.1\nserver_port=25\npolicy_context=\ncompatibility_level=3.6\n"
            "mail_version=3.7.11\n\n",
            (c >> 16) & 255, (c >> 8) & 255, c & 255, c, s, s % 50, rcpt, w->id, n);
        if (write(fd, req, (size_t)len) != len) {
            w->errors++;
            break;
        }
        size_t got = 0;
        for (;;) {
            ssize_t r = read(fd, buf + got, sizeof buf - 1 - got);
            if (r <= 0) {
                w->errors++;
                goto out;
            }
            got += (size_t)r;
            buf[got] = 0;
            if (got >= 2 && buf[got - 1] == '\n' && buf[got - 2] == '\n')
                break;
        }
        const char *a = buf + 7; /* after "action=" */
        if (strncmp(buf, "action=", 7) != 0)
            w->kinds[OTHER]++;
        else if (strncmp(a, "DUNNO", 5) == 0)
            w->kinds[DUNNO]++;
        else if (strncmp(a, "DEFER_IF_PERMIT", 15) == 0)
            w->kinds[DEFER]++;
        else if (a[0] == '4' || a[0] == '5' || strncmp(a, "REJECT", 6) == 0)
            w->kinds[REJECT]++;
        else
            w->kinds[OTHER]++;
        n++;
    }
out:
    w->done = n;
    close(fd);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s HOST PORT CONNS SECONDS CLIENTS RCPT\n", argv[0]);
        return 64;
    }
    host = argv[1];
    port = atoi(argv[2]);
    int conns = atoi(argv[3]);
    seconds = atoi(argv[4]);
    clients = atoi(argv[5]);
    rcpt = argv[6];
    if (clients < 1 || conns < 1)
        return 64;
    struct worker *ws = calloc((size_t)conns, sizeof *ws);
    double start = now();
    deadline = start + seconds;
    for (int i = 0; i < conns; i++) {
        ws[i].id = i;
        pthread_create(&ws[i].t, NULL, run, &ws[i]);
    }
    long total = 0, kinds[KINDS] = {0}, errors = 0;
    for (int i = 0; i < conns; i++) {
        pthread_join(ws[i].t, NULL);
        total += ws[i].done;
        errors += ws[i].errors;
        for (int k = 0; k < KINDS; k++)
            kinds[k] += ws[i].kinds[k];
    }
    double elapsed = now() - start;
    printf("{\"requests\": %ld, \"seconds\": %.3f, \"rps\": %.1f, \"errors\": %ld", total, elapsed,
           total / elapsed, errors);
    for (int k = 0; k < KINDS; k++)
        printf(", \"%s\": %ld", kind_name[k], kinds[k]);
    printf("}\n");
    return errors ? 1 : 0;
}

FROM busybox:latest
ONBUILD COPY marker.txt /from-child-context.txt
ONBUILD RUN echo ran > /onbuild-ran.txt
LABEL role=onbuild-base

// Error numbers on Windows. The backend contract returns negative errno values in libuv's
// numbering, because lib/ names them with util.getSystemErrorName(), and on Windows that expects
// libuv's own UV_E* codes (include/uv/errno.h: the fixed values below -4000), not the CRT's errno.
// iocp_socket.cc translates Winsock and Win32 errors into them. No Windows header here: the binding
// includes this file for the few numbers it exports.
#pragma once

namespace twinloop::uv_errors {

constexpr int kEACCES = -4092;
constexpr int kEADDRINUSE = -4091;
constexpr int kEADDRNOTAVAIL = -4090;
constexpr int kEAFNOSUPPORT = -4089;
constexpr int kEAGAIN = -4088;
constexpr int kEALREADY = -4084;
constexpr int kEBADF = -4083;
constexpr int kEBUSY = -4082;
constexpr int kECANCELED = -4081;
constexpr int kECONNABORTED = -4079;
constexpr int kECONNREFUSED = -4078;
constexpr int kECONNRESET = -4077;
constexpr int kEEXIST = -4075;
constexpr int kEFAULT = -4074;
constexpr int kEHOSTUNREACH = -4073;
constexpr int kEINVAL = -4071;
constexpr int kEIO = -4070;
constexpr int kEISCONN = -4069;
constexpr int kEISDIR = -4068;
constexpr int kEMFILE = -4066;
constexpr int kEMSGSIZE = -4065;
constexpr int kENAMETOOLONG = -4064;
constexpr int kENETDOWN = -4063;
constexpr int kENETUNREACH = -4062;
constexpr int kENFILE = -4061;
constexpr int kENOBUFS = -4060;
constexpr int kENOENT = -4058;
constexpr int kENOMEM = -4057;
constexpr int kENOSPC = -4055;
constexpr int kENOSYS = -4054;
constexpr int kENOTCONN = -4053;
constexpr int kENOTDIR = -4052;
constexpr int kENOTSOCK = -4050;
constexpr int kENOTSUP = -4049;
constexpr int kEPIPE = -4047;
constexpr int kEPROTONOSUPPORT = -4045;
constexpr int kEROFS = -4043;
constexpr int kETIMEDOUT = -4039;
constexpr int kUNKNOWN = -4094;

}  // namespace twinloop::uv_errors
